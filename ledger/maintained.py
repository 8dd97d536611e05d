"""The maintained balances and lots checked against the postings they summarise.

The database keeps `balance` (per account and commodity) and `lot_balance` (per lot held at a
cost): SQLite in the same statement as every posting insert (migration 0011), PostgreSQL through
per-transaction deltas folded in later (0012; a sum there is its row plus its visible deltas,
`store.kept_balances`); the queries read them instead of summing the ledger. Postings stay the truth: `verify_balances` recomputes both tables
from the postings, exactly and without overflow (`sums.py`), and returns every difference. An
empty list means the maintained state is exact. It reads only, in one snapshot (one read
transaction), so a booking that commits meanwhile cannot make it report a false difference.

`tradeledger db verify` (ledger/verify.py) re-derives balances through `Ledger.balances`, which
reads `balance` on SQLite; this check covers both tables, lots included, and names each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import kept_balances, kept_lots
from tradeledger.ledger.sums import FACTOR, combine, unit_sums


@dataclass(frozen=True)
class BalanceDifference:
    """A maintained sum that is not the sum of its postings."""

    table: str  # balance | lot_balance
    account: str
    commodity: str
    lot: tuple  # (cost, cost currency, cost date, label) for a lot; () for a balance
    maintained: Decimal | None  # None: no maintained row
    postings: Decimal | None  # None: no posting

    def __str__(self) -> str:
        where = f"{self.account} {self.commodity}" + (f" lot {self.lot}" if self.lot else "")
        return f"{self.table}: {where}: maintained {self.maintained}, postings {self.postings}"


def verify_balances(engine: Engine, conn: Connection | None = None) -> list[BalanceDifference]:
    """Every difference between the maintained balances and lots and their postings."""
    if conn is not None:
        return _verify(conn)
    with read_connection(engine) as c:
        if c.dialect.name == "postgresql":  # one snapshot for every statement, not one per statement
            c = c.execution_options(isolation_level="REPEATABLE READ")
        with c.begin():
            return _verify(c)


def _verify(c: Connection) -> list[BalanceDifference]:
    p, b, lot = schema.posting, kept_balances(c), kept_lots(c)
    names = dict(c.execute(sa.select(schema.account.c.id, schema.account.c.name)).all())
    sums = unit_sums(p.c.units, c)
    differences: list[BalanceDifference] = []

    truth = {(r[0], r[1]): combine(r, len(sums)) for r in c.execute(
        sa.select(p.c.account_id, p.c.commodity, *sums).group_by(p.c.account_id, p.c.commodity))}
    kept = {(r.account_id, r.commodity): int(r.whole) * FACTOR + int(r.nanos) for r in c.execute(sa.select(b))}
    for key in sorted(set(truth) | set(kept), key=lambda k: (names.get(k[0], ""), k[1])):
        if truth.get(key) != kept.get(key):
            differences.append(BalanceDifference("balance", names.get(key[0], f"#{key[0]}"), key[1], (),
                                                 _number(kept.get(key)), _number(truth.get(key))))

    date, label = sa.func.coalesce(p.c.cost_date, ""), sa.func.coalesce(p.c.cost_label, "")
    group = (p.c.account_id, p.c.commodity, p.c.cost, p.c.cost_currency, date, label)
    truth = {tuple(r[:6]): (combine(r, len(sums)), r[6]) for r in c.execute(
        sa.select(*group, sa.func.min(p.c.ts), *sums).where(p.c.cost.is_not(None)).group_by(*group))}
    kept = {(r.account_id, r.commodity, r.cost, r.cost_currency, r.cost_date, r.cost_label):
            (int(r.whole) * FACTOR + int(r.nanos), r.first_ts) for r in c.execute(sa.select(lot))}
    for key in sorted(set(truth) | set(kept), key=lambda k: (names.get(k[0], ""), *map(str, k[1:]))):
        if truth.get(key) != kept.get(key):
            differences.append(BalanceDifference(
                "lot_balance", names.get(key[0], f"#{key[0]}"), key[1],
                (from_scaled(key[2]), key[3], key[4] or None, key[5] or None),
                _number(kept.get(key, (None,))[0]), _number(truth.get(key, (None,))[0])))
    return differences


def _number(value: int | None) -> Decimal | None:
    return None if value is None else from_scaled(value)
