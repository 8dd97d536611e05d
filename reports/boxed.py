"""A table drawn in a box for a terminal: pure functions from cells and column widths to lines.

The terminal face of `render.table`. Its look is the one rich's default table gave this CLI (a
heavy head, light body, one space of padding, the title centred above, the header bold and the
title italic), drawn here because importing rich and laying a table out with it cost 40-55 ms of
every command's start on a terminal: more than the rest of `status`'s work on the demo ledger.

Widths come from `render.fit_widths`; a cell wider than its column is folded onto more lines of
its row (at spaces where it can, inside a word where it must), never cut. Figures are
right-aligned, text left-aligned, headers as their column. Characters are counted as one column
each: every text this CLI prints is ASCII or a box-drawing character.
"""

from __future__ import annotations

from collections.abc import Sequence

BOLD, ITALIC, RESET = "\x1b[1m", "\x1b[3m", "\x1b[0m"


def fold(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` characters: words kept whole on a line while they fit,
    a word longer than the line split across lines; a line break in the text starts a new line."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            if line and len(line) + 1 + len(word) <= width:
                line += " " + word
                continue
            if line:
                lines.append(line)
            while len(word) > width:
                lines.append(word[:width])
                word = word[width:]
            line = word
        lines.append(line)
    return lines


def _row(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool], edge: str,
         style: str = "", bottom: bool = False) -> list[str]:
    """One table row as its terminal lines: each cell folded to its width, the row as tall as its
    tallest cell, the shorter cells blank below (aligned at the top), or above (`bottom`: headers
    sit on the rule under them)."""
    folded = [fold(cell, width) for cell, width in zip(cells, widths)]
    height = max(len(lines) for lines in folded)
    if bottom:
        folded = [[""] * (height - len(lines)) + lines for lines in folded]
    out = []
    for i in range(height):
        parts = []
        for lines, width, is_right in zip(folded, widths, right):
            text = lines[i] if i < len(lines) else ""
            text = text.rjust(width) if is_right else text.ljust(width)
            parts.append(f" {style}{text}{RESET} " if style else f" {text} ")
        out.append(edge + edge.join(parts) + edge)
    return out


def boxed(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]], widths: Sequence[int],
          right: Sequence[bool], styled: bool = True) -> list[str]:
    """The lines of a boxed table `widths` wide (each column's text, padding and borders aside):
    the title centred above, a heavy header, then a line (or more, folded) per row. `right`: the
    columns aligned right. `styled`: the header bold and the title italic (ANSI)."""
    inner = sum(widths) + 3 * len(widths) - 1  # between the outer borders

    def rule(left: str, fill: str, cross: str, end: str) -> str:
        return left + cross.join(fill * (w + 2) for w in widths) + end

    lines = []
    for line in fold(title, inner + 2):
        centred = " " * ((inner + 2 - len(line)) // 2) + line  # an odd space goes to the right
        lines.append(f"{ITALIC}{centred}{RESET}" if styled and line else centred)
    lines.append(rule("┏", "━", "┳", "┓"))
    lines += _row(columns, widths, right, "┃", BOLD if styled else "", bottom=True)
    lines.append(rule("┡", "━", "╇", "┩"))
    for row in cells:
        lines += _row(row, widths, right, "│")
    lines.append(rule("└", "─", "┴", "┘"))
    return lines
