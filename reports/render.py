"""Showing results to a person or a program: the CLI's only output path.

Three faces of one table, chosen by where the output goes:

* a terminal: a rich table whose cells wrap instead of being cut, so an id or a name is never
  shown as `36b0e…`, whatever the width;
* a pipe or a file: plain aligned text (a title line, a header, one line per row), what `grep`,
  `head` and `column` expect;
* `--csv` (every command that takes `--json` takes it too): comma-separated values with a header;
  a command that prints several tables puts a `# title` line before each after the first.

Figures follow one format by what a column holds (`display`): money at two decimals (the cent;
exact figures stay in `--json`), quantities as integers when whole, prices and rates exactly,
without trailing zeros. Numbers are right-aligned. An empty result is a line that says so, never
an empty box. JSON keeps exact decimal strings and ISO 8601 times.
"""

from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal
from typing import Any, Iterable

import click

from tradeledger.ledger.numbers import jsonable

CENT = Decimal("0.01")
MONEY = {"realized", "unrealized", "commissions", "commission", "net", "income", "cash", "amount", "balance",
         "ledger", "broker", "beancount", "diff", "expected", "marks", "unsettled", "vm", "total", "notional",
         "capital", "nav", "pnl", "slippage", "fee", "fees", "dividends", "tolerance"}
QUANTITY = {"qty", "units", "current", "target", "change", "quantity", "filled", "remaining", "position",
            "shares", "held", "qty diff"}
NUMERIC = MONEY | QUANTITY | {"price", "mark", "last", "forecast", "reference", "reference price", "rate", "weight",
                              "avg cost", "fill price", "count", "entries", "postings", "bps", "days", "id", "run"}

_state = {"csv": False, "tables": 0}


def set_csv(enabled: bool) -> None:
    """`--csv` was given: tables print as comma-separated values."""
    _state["csv"] = bool(enabled)


def csv_enabled() -> bool:
    return _state["csv"]


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


def display(value: Any, column: str) -> str:
    """One cell as a person reads it (pure): see the module docstring."""
    if value is None:
        return ""
    number = _decimal(value)
    if number is None:
        return str(jsonable(value))
    kind = column.lower()
    if kind in MONEY:
        return f"{number.quantize(CENT):f}" if number == number.quantize(CENT) or abs(number) >= CENT \
            else f"{number.normalize():f}"  # a sub-cent amount is shown as it is, never as 0.00
    if number == number.to_integral_value():
        return f"{number.to_integral_value():f}"
    return f"{number.normalize():f}"


def _is_numeric(column: str) -> bool:
    return column.lower() in NUMERIC


def table(title: str, columns: list[str], rows: Iterable[Iterable[Any]], empty: str | None = None) -> None:
    """Print one table; with no rows, one line saying there is nothing (`empty`, else "no <title>")."""
    cells = [[display(v, c) for v, c in zip(row, columns)] for row in rows]
    _state["tables"] += 1
    if not cells:
        if not _state["csv"]:
            click.echo(empty or f"no {title}")
        return
    if _state["csv"]:
        if _state["tables"] > 1:
            click.echo(f"# {title}")
        out = click.get_text_stream("stdout")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        out.flush()
        return
    if sys.stdout.isatty():
        _rich(title, columns, cells)
    else:
        _aligned(title, columns, cells)


def _rich(title: str, columns: list[str], cells: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for column in columns:  # fold, never cut: an id is copied from here
        t.add_column(column, justify="right" if _is_numeric(column) else "left", overflow="fold")
    for row in cells:
        t.add_row(*row)
    Console().print(t)


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
    """Rows as CSV on stdout (nested values as JSON text), exact decimals."""
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
            values.append(json.dumps(value) if isinstance(value, (dict, list)) else ("" if value is None else value))
        writer.writerow(values)
    click.echo(out.getvalue(), nl=False)
