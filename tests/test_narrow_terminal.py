"""Tables on a terminal 80 columns wide (a real pty, as a trader's window): reports/boxed.py draws
them inside the width, never cropping the right side, and every id, name and figure is there whole (an id may
fold onto the next line of its cell, never be cut). The same commands piped are plain text."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from support import demo_home

WIDTH = 80
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return demo_home(tmp_path_factory, "narrow")


def on_terminal(home, *args: str, width: int = WIDTH, imports: list | None = None) -> str:
    """The command's stdout as a terminal `width` columns wide shows it (colours stripped); the
    modules it imported added to `imports` when given."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, width, 0, 0))
    env = {**os.environ, "COLUMNS": str(width), "LINES": "50", "TERM": "xterm", "NO_COLOR": "1"}
    if imports is not None:
        env["PYTHONPROFILEIMPORTTIME"] = "1"  # each import a line on stderr
    proc = subprocess.Popen([sys.executable, "-m", "tradeledger.cli", "--home", str(home), *args],
                            stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    errors = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, errors
    if imports is not None:
        imports += [line.rsplit("|", 1)[1].strip() for line in errors.splitlines() if line.startswith("import time:")]
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def columns_shown(output: str) -> dict[str, str]:
    """Each column of the first boxed table: its header -> all its body text top to bottom,
    whitespace removed (a folded cell reads whole again)."""
    lines = output.splitlines()
    heads = [line for line in lines if line.startswith("┃")]
    body = [line for line in lines if line.startswith("│")]
    names = None
    for line in heads:
        parts = [p.strip() for p in line.strip("┃").split("┃")]
        names = parts if names is None else [a + b for a, b in zip(names, parts)]
    texts = ["" for _ in names]
    for line in body:
        parts = line.strip().strip("│").split("│")
        assert len(parts) == len(names), line
        texts = [t + re.sub(r"\s", "", p) for t, p in zip(texts, parts)]
    return dict(zip(names, texts))


COMMANDS = [
    ("positions",), ("fills", "list"), ("orders", "list"), ("targets", "list"), ("targets", "show", "3"),
    ("accounts",), ("exceptions", "list"), ("exceptions", "show", "1"), ("pnl", "--by", "instrument"),
    ("status", "--no-broker"), ("instruments", "list"), ("roll", "status"), ("report", "costs"),
    ("report", "exposure"), ("report", "performance"), ("adjust", "list"), ("actions", "list"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_a_table_fits_80_columns_and_shows_every_cell_whole(home, args):
    shown = on_terminal(home, *args)
    box = [line.rstrip() for line in shown.splitlines() if line[:1] and line[0] in "┏┃┡│└"]
    assert box, shown
    too_wide = [line for line in box if len(line) > WIDTH]  # a sentence longer than that wraps
    assert not too_wide, "\n".join(too_wide)
    assert all(line[-1] in "┓┃┩│┘" for line in box), "a table's right side is cut:\n" + shown
    assert "…" not in shown
    columns = columns_shown(shown)
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(
        main, ["--home", str(home), *args, "--csv"]).stdout.split("\n# ", 1)[0])))
    assert rows
    for row in rows:
        for name, value in row.items():
            if name in columns and value:
                assert re.sub(r"\s", "", value) in columns[name], (name, value, shown)


def test_a_table_on_a_terminal_is_drawn_without_rich(home):
    """rich cost 40-55 ms of every command's start on a terminal, more than `status`'s own work:
    the box is drawn by reports/boxed.py, and rich is not even a dependency any more."""
    imports: list[str] = []
    shown = on_terminal(home, "status", "--no-broker", imports=imports)
    assert "tradeledger.reports.boxed" in imports and "┏" in shown and "┘" in shown
    assert not [name for name in imports if name.split(".")[0] == "rich"]


def test_widths_fold_text_and_headers_never_figures():
    from tradeledger.reports.render import fit_widths

    columns = ["strategy", "contract", "unrealized", "detail"]
    cells = [["unattributed", "FESXZ26", "-2461.56", "BUY 25 SPY @ 318.73 has no orderRef of ours"]]
    assert fit_widths(columns, cells, 200) == [12, 8, 10, 43]
    widths = fit_widths(columns, cells, 50)
    assert sum(widths) + 3 * 4 + 1 <= 50 and widths[2] >= len("-2461.56")
    assert widths[3] < 43  # the long text gave way first
    assert fit_widths(columns, cells, 20) is None  # a figure never folds: printed as plain text
