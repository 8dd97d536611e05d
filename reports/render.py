"""Showing results to a person or a program: the CLI's only output path.

Three faces of one table, chosen by where the output goes:

* a terminal: a boxed table (reports/boxed.py) whose cells fold instead of being cut, so an id
  or a name is never shown as `36b0e…`, whatever the width;
* a pipe or a file: plain aligned text (a title line, a header, one line per row), what `grep`,
  `head` and `column` expect;
* `--csv` (every command that takes `--json` takes it too): comma-separated values with a header
  (an empty result: the header alone); a command that prints several tables puts a `# title` line
  before each after the first, and a sentence said with them is a `# ` line too (`say`).

Figures follow one format by what a column holds (`display`): money at its currency's minor unit
(the row's `currency`, else the cent; exact figures stay in `--json`), prices at the tick precision
of the row's contract or instrument (MES ticks 0.25: `4590.25`, `4590.00`; 6E ticks 0.00005:
`1.08455`; ZF ticks 1/128 of a point: `112.8750000`; a price finer than its tick, an average,
is shown whole, never rounded), quantities as
integers when whole, rates exactly without trailing zeros. Numbers are right-aligned. Times in a
table are UTC to the second. An empty result is a line that says so, never an empty box. JSON keeps
exact decimal strings and ISO 8601 times with their zone (`ledger/times.py`).

Tick sizes come from the environment's configuration through `set_tick_source` (a function of a
contract code or instrument name), set when a command opens its environment.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any, Callable, Iterable

import click

from tradeledger.ledger.numbers import jsonable, money_text
from tradeledger.ledger.times import STORED_TIME, table_time

CENT = Decimal("0.01")
MONEY = {"realized", "unrealized", "commissions", "commission", "net", "income", "cash", "amount", "balance",
         "ledger", "broker", "beancount", "diff", "expected", "marks", "unsettled", "vm", "total", "notional",
         "capital", "nav", "pnl", "slippage", "fee", "fees", "dividends", "tolerance", "annual_risk",
         "pending_commissions", "gross_notional", "net_notional", "slippage_base", "max_drawdown", "drawdown",
         "cumulative"}
QUANTITY = {"qty", "units", "current", "target", "change", "quantity", "filled", "remaining", "position",
            "shares", "held", "qty diff"}
PRICE = {"price", "mark", "last", "reference", "reference price", "avg cost", "fill price", "close", "raw",
         "adjusted", "settle", "settlement", "limit price"}
# Figures a table rounds to so many places (exact in --json and in the explanations that follow).
ROUNDED = {"forecast": 2, "vol": 4, "volatility": 4, "weight": 4, "pct_capital": 2, "bps": 2, "slippage_bps": 2,
           "commission_bps": 2, "pct": 2, "annual_return_pct": 2, "annual_vol_pct": 2, "max_drawdown_pct": 2,
           "sharpe": 2}
NUMERIC = MONEY | QUANTITY | PRICE | set(ROUNDED) | {"mult", "multiplier", "fx", "fx_rate", "fills",
                                                     "days to deadline","forecast", "rate", "weight", "count", "entries", "postings", "bps", "days",
                                      "id", "run"}
TEXT_MIN_WIDTH = 10  # a folded id or name keeps this much of a line
HEADER_MIN_WIDTH = 5  # a folded header keeps this much (`count` whole, `unrealized` as `unrea|lized`)
# The columns that say which contract (for its tick) and which currency (for its minor unit) a row is in.
CONTRACT_COLUMNS = ("contract", "instrument")

_state: dict[str, Any] = {"csv": False, "tables": 0, "ticks": None}


def set_csv(enabled: bool) -> None:
    """`--csv` was given (or not): tables print as comma-separated values. Called once per command,
    it starts the command's count of tables afresh (several commands may run in one process)."""
    _state["csv"] = bool(enabled)
    _state["tables"] = 0


def csv_enabled() -> bool:
    return _state["csv"]


def set_tick_source(ticks: Callable[[str], Decimal | None] | None) -> None:
    """Where prices find their tick size: a contract code or instrument name -> tick (None: unknown)."""
    _state["ticks"] = ticks


def _tick(code: Any) -> Decimal | None:
    source = _state["ticks"]
    if source is None or not isinstance(code, str) or not code:
        return None
    try:
        return source(code)
    except Exception:  # a table is still printed when the configuration cannot say
        return None


def places_of(step: Decimal) -> int:
    """Decimal places of a tick or minor unit: 0.25 -> 2, 0.00005 -> 5, 5 -> 0."""
    return max(0, -step.normalize().as_tuple().exponent)


def rounded(number: Any, places: int) -> str:
    """A figure rounded for reading (half even) to exactly `places`: 1.716913375 -> 1.7169, 0.2 -> 0.20."""
    return f"{Decimal(str(number)).quantize(Decimal(1).scaleb(-places)):f}"


def _at_places(number: Decimal, places: int) -> str:
    """`number` with exactly `places` decimals when that loses nothing, else exactly as it is."""
    step = Decimal(1).scaleb(-places)
    rounded = number.quantize(step)
    return f"{rounded:f}" if rounded == number else f"{number.normalize():f}"


def emit_json(data: Any) -> None:
    click.echo(json.dumps(jsonable(data), indent=2, sort_keys=False))


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            return None
        return number if number.is_finite() and value.strip() == value and value else None
    return None


def display(value: Any, column: str, tick: Decimal | None = None, currency: str | None = None) -> str:
    """One cell as a person reads it (pure): see the module docstring. `tick`: the row's contract's
    tick size (prices); `currency`: the row's currency (money)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):  # ['GLD'] -> GLD
        return ", ".join(display(v, column, tick, currency) for v in value)
    time = table_time(value)
    if time is not value:
        return time
    if isinstance(value, float) and column.lower() in ROUNDED:  # a ratio computed in floats (bps, %)
        return rounded(repr(value), ROUNDED[column.lower()])
    number = _decimal(value)
    if number is None:
        return str(jsonable(value))
    kind = column.lower()
    if kind in MONEY:
        return money_text(number, currency)  # a sub-unit amount is shown as it is, never as 0.00
    if kind in PRICE and tick is not None:
        return _at_places(number, places_of(tick))
    if kind in ROUNDED:
        return rounded(number, ROUNDED[kind])
    if number == number.to_integral_value():
        return f"{number.to_integral_value():f}"
    return f"{number.normalize():f}"


def _cells(columns: list[str], rows: Iterable[Iterable[Any]]) -> list[list[str]]:
    lower = [c.lower() for c in columns]
    where = next((lower.index(c) for c in CONTRACT_COLUMNS if c in lower), None)
    ccy = lower.index("currency") if "currency" in lower else None
    prices = any(c in PRICE for c in lower)
    cells = []
    for row in rows:
        row = list(row)
        tick = _tick(row[where]) if prices and where is not None else None
        currency = row[ccy] if ccy is not None else None
        cells.append([display(v, c, tick, currency) for v, c in zip(row, columns)])
    return cells


def _is_numeric(column: str) -> bool:
    return column.lower() in NUMERIC


def table(title: str, columns: list[str], rows: Iterable[Iterable[Any]], empty: str | None = None,
          optional: Iterable[str] = ()) -> None:
    """Print one table; with no rows, one line saying there is nothing (`empty`, else "no <title>").
    `optional`: columns a terminal too narrow for the whole table leaves out, in this order (a pipe,
    `--csv` and `--json` keep every column)."""
    cells = _cells(columns, rows)
    _state["tables"] += 1
    if not cells and not _state["csv"]:
        click.echo(empty or f"no {title}")
        return
    if _state["csv"]:  # an empty result is its header alone
        if _state["tables"] > 1:
            click.echo(f"# {title}")
        out = click.get_text_stream("stdout")
        import csv  # here: only --csv writes it

        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        out.flush()
        return
    if sys.stdout.isatty():
        _boxed(title, columns, cells, list(optional))
    else:
        _aligned(title, columns, cells)


def say(text: str) -> None:
    """A sentence said with the tables (a run's heading, its explanations): with --csv a `# ` line,
    as a title is, so that the output stays CSV for a program and readable for a person."""
    click.echo(f"# {text}" if _state["csv"] else text)


def _whole(column: str, values: list[str]) -> bool:
    """A column whose cells are never folded: single figures (a number's digits read whole) and times."""
    if _is_numeric(column):
        return all(" " not in v for v in values)
    return all(v == "" or STORED_TIME.fullmatch(v) for v in values)


def fit_widths(columns: list[str], cells: list[list[str]], room: int, stages: int = 3) -> list[int] | None:
    """Each column's width for a boxed table at most `room` characters wide (pure), or None when
    none fits. The widest foldable column gives way first: long text folds down to TEXT_MIN_WIDTH,
    then headers down to their widest cell, then text down to 4 (`stages`: how many of these three
    may be taken); figures and times themselves never fold. Nothing is cut: a folded cell
    continues on the next line of its row."""
    n = len(columns)
    budget = room - (3 * n + 1)  # the box's borders and padding (reports/boxed.py)
    longest = [max(len(row[i]) for row in cells) for i in range(n)]
    widths = [max(len(c), w) for c, w in zip(columns, longest)]
    whole = [_whole(c, [row[i] for row in cells]) for i, c in enumerate(columns)]
    text = [min(w, TEXT_MIN_WIDTH) for w in widths]
    header = [max(longest[i], min(len(c), HEADER_MIN_WIDTH)) for i, c in enumerate(columns)]
    floor_stages = [[w if whole[i] else text[i] for i, w in enumerate(widths)],  # long text folds
              [header[i] if whole[i] else min(text[i], header[i]) for i in range(n)],  # then headers
              [header[i] if whole[i] else min(text[i], header[i], 4) for i in range(n)]]  # then all text
    for floors in floor_stages[:stages]:
        while sum(widths) > budget:
            give = [i for i in range(n) if widths[i] > floors[i]]
            if not give:
                break
            widest = max(give, key=lambda i: widths[i])
            widths[widest] -= 1
        if sum(widths) <= budget:
            return widths
    return None


def _boxed(title: str, columns: list[str], cells: list[list[str]], optional: list[str]) -> None:
    """On a terminal: low-value columns left out while the table is wider than the terminal (said
    below it), then ids, names and headers folded to fit (`fit_widths`), never cut; a table that
    cannot fit even so is printed as plain aligned text, which the terminal wraps whole."""
    import os
    import shutil

    from tradeledger.reports.boxed import boxed, fold

    room = shutil.get_terminal_size().columns  # $COLUMNS, else the terminal's own width
    dropped = []
    for name in optional:  # left out while the table would need more than its long text folded
        if fit_widths(columns, cells, room, stages=1) is not None:
            break
        if name in columns:
            i = columns.index(name)
            columns = columns[:i] + columns[i + 1:]
            cells = [row[:i] + row[i + 1:] for row in cells]
            dropped.append(name)
    widths = fit_widths(columns, cells, room)
    if widths is None:
        _aligned(title, columns, cells)
        return
    styled = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    lines = boxed(title, columns, cells, widths, [_is_numeric(c) for c in columns], styled)
    click.echo("\n".join(lines))
    if dropped:
        note = f"({', '.join(dropped)} left out at this width: a wider terminal, a pipe or --csv shows them)"
        click.echo("\n".join(fold(note, room)))


def _aligned(title: str, columns: list[str], cells: list[list[str]]) -> None:
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if _is_numeric(c) else v.ljust(w) for v, w, c in zip(values, widths, columns)]
        return "  ".join(parts).rstrip()

    click.echo(title)
    click.echo(line(columns))
    for row in cells:
        click.echo(line(row))
    click.echo("")


def emit_csv(rows: list[dict], columns: list[str] | None = None) -> None:
    """Rows as CSV on stdout, exact decimals; a list of names as the table shows it (`GLD, SLV`),
    other nested values as JSON text."""
    import csv
    import io

    columns = columns or (list(rows[0]) if rows else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = []
        for column in columns:
            value = jsonable(row.get(column))
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ", ".join(value)
            values.append(json.dumps(value) if isinstance(value, (dict, list)) else ("" if value is None else value))
        writer.writerow(values)
    click.echo(out.getvalue(), nl=False)
