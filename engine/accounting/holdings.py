"""Who holds what in a contract: positions from the ledger, marks and lots, read and written
inside the caller's database transaction.

A *holder* (`holders.Holder`) is a strategy's account component (`Trend-fast`) or None for the
unattributed bucket. Positions come from postings (the truth); marks come from `position_mark`, which is
written in the same transaction as every entry that moves a futures position.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.broker.base import Contract
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import Holding
from tradeledger.engine.accounting.holders import Holder, from_column, holder_of, to_column
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Account
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.store import Commodity, Ledger, fmt_ts

LEDGER_EPOCH = dt.date(2000, 1, 1)  # accounts the engine opens on demand open on this date


def lock_contract(conn: Connection, code: str) -> None:
    """Serialise writers of one contract's positions and marks until this transaction ends.

    SQLite already has a single writer (BEGIN IMMEDIATE). PostgreSQL runs READ COMMITTED, where
    two processes (the daemon's fill sync and a CLI command) could both read the same holdings
    or both find a fill not booked yet: a transaction-scoped advisory lock per contract makes
    the second wait, and its next statement then sees what the first committed.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"tl:{code}"})


def load_holdings(conn: Connection, ledger: Ledger, chart: Chart, contract: Contract) -> dict:
    """holder -> Holding for every holder with a position in the contract (or a mark)."""
    lock_contract(conn, contract.code)
    balances = ledger.balances(prefix=chart.root, conn=conn, commodity=contract.code)
    marks = {from_column(row.holder): from_scaled(row.price) for row in conn.execute(
        sa.select(tables.position_mark).where(tables.position_mark.c.contract == contract.code))}
    result: dict = {}
    for (account, _), units in balances.items():
        holder = holder_of(chart, account)
        if holder is False:
            continue
        lots = () if contract.sec_type == "FUT" else tuple(ledger.lots(account, contract.code, conn))
        result[holder] = Holding(units, marks.get(holder), lots)
    return result


def save_marks(conn: Connection, contract: Contract, holdings: dict, time: dt.datetime,
               before: dict | None = None) -> None:
    """Write the marks of `holdings`; with `before`, only of the holders whose holding changed."""
    if contract.sec_type != "FUT":
        return
    t = tables.position_mark
    for holder, holding in holdings.items():
        if before is not None and before.get(holder) == holding:
            continue
        key = (t.c.holder == to_column(holder)) & (t.c.contract == contract.code)
        conn.execute(t.delete().where(key))
        if holding.position != 0 and holding.mark is not None:
            conn.execute(t.insert().values(holder=to_column(holder), contract=contract.code,
                                           price=to_scaled(holding.mark, "mark"), time=fmt_ts(time)))


def marks(conn: Connection) -> dict[tuple[Holder, str], Decimal]:
    return {(from_column(r.holder), r.contract): from_scaled(r.price)
            for r in conn.execute(sa.select(tables.position_mark))}


def ensure_holder(conn: Connection, ledger: Ledger, chart: Chart, holder: Holder) -> None:
    """Open a holder's holdings, income and commission accounts if they are not open yet."""
    ledger.open_account(Account(chart.holdings(holder), LEDGER_EPOCH, booking="FIFO"), conn)
    ledger.open_account(Account(chart.trading(holder), LEDGER_EPOCH), conn)
    ledger.open_account(Account(chart.commissions(holder), LEDGER_EPOCH), conn)


def ensure_contract(conn: Connection, ledger: Ledger, contract: Contract, date: dt.date) -> None:
    kind = "future" if contract.sec_type == "FUT" else "share"
    ledger.ensure_commodity(Commodity(contract.code, kind, contract.currency, contract.multiplier,
                                      LEDGER_EPOCH), conn)
    ledger.ensure_commodity(Commodity(contract.currency, "currency", None, Decimal(1), LEDGER_EPOCH), conn)


def known_contracts(ledger: Ledger, conn: Connection | None = None) -> dict[str, Contract]:
    """Contracts the ledger has booked, as far as booking needs them (kind, currency, multiplier)."""
    return {c.name: Contract(code=c.name, sec_type="FUT" if c.kind == "future" else "STK", symbol=c.name,
                             exchange="", currency=c.currency or "", multiplier=c.multiplier)
            for c in ledger.commodities(conn) if c.kind in ("future", "share")}
