"""Showing results to a person (rich tables) or a program (JSON); the CLI's only output path.

Decimals are printed exactly (as strings in JSON), never through float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable

import click
from rich.console import Console
from rich.table import Table


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def emit_json(data: Any) -> None:
    click.echo(json.dumps(_plain(data), indent=2, sort_keys=False))


def table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column, justify="right" if column.lower() in NUMERIC else "left")
    for row in rows:
        t.add_row(*["" if v is None else str(_plain(v)) for v in row])
    Console().print(t)


NUMERIC = {"qty", "units", "balance", "amount", "price", "realized", "unrealized", "commissions",
           "net", "ledger", "beancount", "diff", "broker", "target", "current", "change", "forecast"}
