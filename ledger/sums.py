"""Sums of nano-units in SQL that never overflow, on either backend.

Amounts are BIGINT nano-units (`numbers.py`): one posting holds at most about 9.2e9 units, and
so does a 64-bit sum. PostgreSQL's SUM over BIGINT is NUMERIC (exact, unbounded), but SQLite's
is a 64-bit integer that fails with "integer overflow" once a balance passes 9.2e9 units (two
deposits of 5,000,000,000 JPY). On SQLite a sum is therefore taken in two parts, whole units
and the nano remainder,

    SUM(units / 10^9)  and  SUM(units % 10^9)      (both truncate toward zero; exact)

each of which fits 64 bits for any ledger of fewer than 9.2e9 postings, and combined exactly
in Python: total = whole * 10^9 + remainder. A ledger whose reads once overflowed needs no
repair: nothing wrong was stored, and these sums read it.

    exprs = unit_sums(p.c.units, conn)          # one or two aggregate expressions
    rows = conn.execute(select(p.c.account_id, *exprs).group_by(p.c.account_id))
    totals = {row[0]: combine(row, len(exprs)) for row in rows}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from tradeledger.ledger.numbers import SCALE

FACTOR = 10**SCALE


def unit_sums(column, conn_or_dialect) -> list:
    """The aggregate expression(s) whose combined value is SUM(column), exactly."""
    dialect = getattr(conn_or_dialect, "dialect", conn_or_dialect)
    name = getattr(dialect, "name", dialect)
    if name != "sqlite":
        return [sa.func.sum(column)]
    return [sa.func.sum(column.op("/")(FACTOR)), sa.func.sum(column.op("%")(FACTOR))]


def combine(row: Sequence, parts: int) -> int | None:
    """The exact sum from the last `parts` values of a row (None when no rows were summed)."""
    values = row[len(row) - parts:]
    if values[0] is None:
        return None
    if parts == 1:
        return int(values[0])
    whole, rest = values
    return int(whole) * FACTOR + int(rest)
