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

from tradeledger.engine.context import Books
from tradeledger.broker.base import Contract
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import Holding
from tradeledger.engine.accounting.holders import Holder, display, from_column, holder_of, to_column
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.db import read_connection
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


def load_holdings(conn: Connection, books: Books, contract: Contract) -> dict:
    """holder -> Holding for every holder with a position in the contract."""
    return load_holdings_many(conn, books, [contract])[contract.code]


def load_holdings_many(conn: Connection, books: Books, contracts: list[Contract]) -> dict[str, dict]:
    """`load_holdings` of several contracts in three reads (positions, marks, and the lots of the
    shares held): contract code -> holder -> Holding. Each contract is locked first, in one order."""
    ledger, chart = books.ledger, books.chart
    codes = sorted({c.code for c in contracts})
    kinds = {c.code: c.sec_type for c in contracts}
    for code in codes:
        lock_contract(conn, code)
    balances = ledger.balances(prefix=chart.root, conn=conn, commodities=codes)
    t = tables.position_mark
    marks = {(from_column(row.holder), row.contract): from_scaled(row.price)
             for row in conn.execute(sa.select(t).where(t.c.contract.in_(codes)))}
    result: dict[str, dict] = {code: {} for code in codes}
    for (account, code), units in balances.items():
        holder = holder_of(chart, account)
        if holder is False:
            continue
        lots = () if kinds[code] == "FUT" else tuple(ledger.lots(account, code, conn))
        result[code][holder] = Holding(units, marks.get((holder, code)), lots)
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


def verify_books(ledger: Ledger, chart: Chart):
    """`db verify` (ledger/verify.py) plus the engine's running state per holder and contract:
    every futures position the postings hold has its mark, and no mark is left for a holding the
    postings say is flat (the marks are written in the same transaction as the entries that move
    a position, so either finding means something wrote one without the other); and no cash
    movement booked twice under one broker reference (`cash_findings`)."""
    from dataclasses import replace

    from tradeledger.ledger.verify import Finding, verify

    result = verify(ledger)
    found: list[Finding] = []
    with read_connection(ledger.engine) as conn:
        futures = {c.name for c in ledger.commodities(conn) if c.kind == "future"}
        held = {(holder, code): units for (account, code), units in
                ledger.balances(prefix=chart.root, conn=conn).items()
                if code in futures and (holder := holder_of(chart, account)) is not False}
        kept = {(from_column(r.holder), r.contract) for r in conn.execute(sa.select(tables.position_mark))}
    for holder, code in sorted(set(held) - kept, key=str):
        found.append(Finding("marks", f"{display(holder)} holds {held[(holder, code)]} {code} without a mark"))
    for holder, code in sorted(kept - set(held), key=str):
        found.append(Finding("marks", f"{display(holder)} has a mark for {code} but holds none"))
    found += cash_findings(ledger, chart)
    return replace(result, findings=result.findings + tuple(found)) if found else result


def cash_findings(ledger: Ledger, chart: Chart) -> list:
    """A cash movement booked more than once under one broker reference (trust/cash_moves.py,
    `booked_twice`): each a finding naming the entries and the reversal that repairs it."""
    from tradeledger.engine.trust.cash_moves import booked_twice
    from tradeledger.ledger.verify import Finding

    with read_connection(ledger.engine) as conn:
        return [Finding("cash", twice.said()) for twice in booked_twice(conn, ledger, chart)]


def marks(conn: Connection) -> dict[tuple[Holder, str], Decimal]:
    return {(from_column(r.holder), r.contract): from_scaled(r.price)
            for r in conn.execute(sa.select(tables.position_mark))}


def ensure_holder(conn: Connection, books: Books, holder: Holder) -> None:
    """Open a holder's holdings, income and commission accounts if they are not open yet."""
    ledger, chart = books.ledger, books.chart
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
