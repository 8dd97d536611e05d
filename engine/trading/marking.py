"""Daily settlement: every futures position marked to the settlement price, once per date.

One ledger entry per (contract, date) holds every holder's variation margin; its idempotency
key makes a second `mark` for the same date a no-op. The holders' marks move to the settlement
price in the same database transaction.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.broker.base import Contract
from tradeledger.engine import tables
from tradeledger.engine.accounting.booking import settlement_entry
from tradeledger.engine.accounting.holdings import load_holdings, save_marks
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import Ledger


def futures_held(engine, ledger: Ledger, chart: Chart) -> list[str]:
    """Contract codes of futures with a non-zero position in any holder."""
    with read_connection(engine) as conn:
        futures = set(conn.execute(sa.text("SELECT name FROM commodity WHERE kind = 'future'")).scalars())
        positions = ledger.positions(prefix=chart.root, conn=conn)
    return sorted({code for (_, code), units in positions.items() if code in futures and units != 0})


def settlement_prices(engine, day: dt.date) -> dict[str, Decimal]:
    s = tables.settlement
    with read_connection(engine) as conn:
        rows = conn.execute(sa.select(s.c.contract, s.c.price).where(s.c.date == day.isoformat()))
        return {code: from_scaled(price) for code, price in rows}


def mark_day(engine, ledger: Ledger, chart: Chart, contracts: dict[str, Contract], day: dt.date,
             prices: dict[str, Decimal], time: dt.datetime) -> tuple[list[str], list[str]]:
    """Book the day's settlement for every held future; returns (booked codes, codes without a price)."""
    booked, missing = [], []
    for code in futures_held(engine, ledger, chart):
        if code not in prices:
            missing.append(code)
            continue
        contract = contracts[code]
        with engine.begin() as conn:
            holdings = load_holdings(conn, ledger, chart, contract)
            txn, after = settlement_entry(chart, contract, day, time, prices[code], holdings)
            if txn is None:
                continue
            if ledger.book(txn, conn).created:
                save_marks(conn, contract, after, time)
                booked.append(code)
    return booked, missing
