"""reports/boxed.py: a boxed table's lines from cells and widths (pure). Every line is the table's
width, every cell's text is there whole (folded, never cut), figures sit right and text left."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tradeledger.reports.boxed import boxed, fold

PLAIN = re.compile(r"\x1b\[[0-9;]*m")


def test_the_look_of_a_small_table():
    lines = boxed("positions", ["strategy", "qty"], [["trend", "-3"], ["unattributed", "25"]], [12, 3],
                  [False, True], styled=False)
    assert lines == [
        "      positions",
        "┏━━━━━━━━━━━━━━┳━━━━━┓",
        "┃ strategy     ┃ qty ┃",
        "┡━━━━━━━━━━━━━━╇━━━━━┩",
        "│ trend        │  -3 │",
        "│ unattributed │  25 │",
        "└──────────────┴─────┘",
    ]


def test_long_text_folds_at_spaces_then_inside_a_word_and_headers_sit_on_the_rule():
    lines = boxed("t", ["detail", "n"], [["BUY 25 SPY has no orderRef", "1"], ["0123456789abcdef", "2"]],
                  [8, 3], [False, True], styled=False)
    assert lines[1:] == [
        "┏━━━━━━━━━━┳━━━━━┓",
        "┃ detail   ┃   n ┃",
        "┡━━━━━━━━━━╇━━━━━┩",
        "│ BUY 25   │   1 │",
        "│ SPY has  │     │",
        "│ no       │     │",
        "│ orderRef │     │",
        "│ 01234567 │   2 │",
        "│ 89abcdef │     │",
        "└──────────┴─────┘",
    ]
    assert boxed("t", ["a long header", "x"], [["1", "2"]], [6, 1], [True, False], styled=False)[2:4] == [
        "┃ a long ┃   ┃",
        "┃ header ┃ x ┃",
    ]


def test_styled_the_header_is_bold_and_the_title_italic_and_nothing_else_changes():
    plain = boxed("fills", ["id"], [["7"]], [2], [True], styled=False)
    styled = boxed("fills", ["id"], [["7"]], [2], [True], styled=True)
    assert "\x1b[1m" in styled[2] and "\x1b[3m" in styled[0]
    assert [PLAIN.sub("", line) for line in styled] == plain


words = st.text(alphabet="abcXYZ0189.-_:@", min_size=1, max_size=30)
cell = st.lists(words, min_size=0, max_size=4).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(words, min_size=n, max_size=n),
    st.lists(st.lists(cell, min_size=n, max_size=n), min_size=0, max_size=5),
    st.lists(st.integers(1, 12), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n))))
def test_every_line_is_the_width_and_every_cell_reads_whole(table):
    columns, cells, widths, right = table
    lines = boxed("title", columns, cells, widths, right, styled=False)
    width = sum(widths) + 3 * len(widths) + 1
    assert all(len(line) == width for line in lines[1:])
    body = [line for line in lines if line.startswith("│")]
    heads = [line for line in lines if line.startswith("┃")]
    for rows, texts in ((heads, [columns]), (body, cells)):
        parts = [line[1:-1].split(line[0]) for line in rows]
        for i in range(len(widths)):
            shown = "".join(re.sub(r"\s", "", p[i]) for p in parts)
            assert shown == "".join(re.sub(r"\s", "", row[i]) for row in texts)
            assert all(p[i][0] == " " and p[i][-1] == " " for p in parts)  # padding kept: nothing cut
            if right[i]:
                assert all(p[i] == " " * (len(p[i]) - len(p[i].lstrip())) + p[i].lstrip() for p in parts)


@given(st.text(alphabet="ab \n", max_size=40), st.integers(1, 10))
def test_fold_keeps_every_character_but_spaces_and_no_line_is_wider(text, width):
    lines = fold(text, width)
    assert all(len(line) <= width for line in lines)
    assert re.sub(r"\s", "", "".join(lines)) == re.sub(r"\s", "", text)
