"""Daily settlement: every futures position marked to the settlement price, once per date.

One ledger entry per (contract, date) holds every holder's variation margin; its idempotency
key makes a second `mark` for the same date a no-op. A day's entries for every held contract and
the holders' marks moving to the settlement prices are one database transaction. The mark chain
runs forward only: a settlement that arrives after something later moved a contract's marks (the
next day's settlement, a fill) is not booked (`mark_day`), since what came later already carries
its variation margin.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import NamedTuple

import sqlalchemy as sa

from tradeledger.errors import UserError
from tradeledger.engine.context import Context
from tradeledger.broker.base import Contract
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import settlement_entry, settlement_key
from tradeledger.engine.accounting.holdings import load_holdings, save_marks
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import fmt_ts


def futures_held(ctx: Context) -> list[str]:
    """Contract codes of futures with a non-zero position in any holder."""
    engine, ledger, chart = ctx.engine, ctx.ledger, ctx.chart
    with read_connection(engine) as conn:
        futures = ledger.commodity_names("future", conn)
        positions = ledger.positions(prefix=chart.root, conn=conn)
    return sorted({code for (_, code), units in positions.items() if code in futures and units != 0})


def settlement_prices(ctx: Context, day: dt.date) -> dict[str, Decimal]:
    engine = ctx.engine
    s = tables.settlement
    with read_connection(engine) as conn:
        rows = conn.execute(sa.select(s.c.contract, s.c.price).where(s.c.date == day.isoformat()))
        return {code: from_scaled(price) for code, price in rows}


class MarkResult(NamedTuple):
    booked: list[str]  # contracts whose settlement entry was booked
    missing: list[str]  # held contracts without a settlement price that day
    later: list[tuple[str, dt.datetime]] = []  # (contract, when its marks moved) after the day's settlement: not booked


def mark_day(ctx: Context, contracts: dict[str, Contract], day: dt.date,
             prices: dict[str, Decimal], time: dt.datetime) -> MarkResult:
    """Book the day's settlement, at `time`, for every held future.

    A contract whose marks something booked after `time` has moved (a later day's settlement, a
    fill or a cross after that day's close) is not marked for the day: its settlement arrived
    late, and what came after already carries the variation margin from the older mark. Booking
    it now would move the holders' marks back to an old price, on today's positions, dated
    before the trades that made them (the mark chain runs forward only)."""
    engine, ledger, chart = ctx.engine, ctx.ledger, ctx.chart
    booked, later = [], []
    held = futures_held(ctx)
    missing = [code for code in held if code not in prices]
    priced = [code for code in held if code in prices]
    if not priced:
        return MarkResult(booked, missing, later)
    m = tables.position_mark
    with engine.begin() as conn:  # the day's marks: one transaction (each entry stays idempotent by its key)
        for code in priced:
            if ledger.find_by_key(settlement_key(chart, code, day), conn) is not None:
                # Settled already: a trade since then moved the marks to its own price, and the next
                # day's settlement marks from there. Marking the day again (the daemon's job run twice,
                # `mark` after a trade) books nothing, never a second entry or a conflict.
                continue
            moved = conn.execute(sa.select(sa.func.max(m.c.time)).where(m.c.contract == code)).scalar()
            if moved is not None and moved > fmt_ts(time):
                later.append((code, dt.datetime.fromisoformat(moved).replace(tzinfo=dt.timezone.utc)))
                continue
            contract = contracts[code]
            holdings = load_holdings(conn, ctx.books, contract)
            txn, after = settlement_entry(chart, contract, day, time, prices[code], holdings)
            if txn is None:
                continue
            if ledger.book(txn, conn).created:
                save_marks(conn, contract, after, time)
                booked.append(code)
    return MarkResult(booked, missing, later)


SETTLEMENT_TIME = dt.time(21, 0)  # UTC: when a day's settlement is booked unless the clock says earlier


def settlement_booking_time(day: dt.date, now: dt.datetime) -> dt.datetime:
    """When a day's marks are booked: the day's settlement time, never later than now (pure).

    A day after today cannot be marked (nothing settled yet); today before the settlement time is
    booked at the present moment, so the books never hold an entry in the future, which a
    reconciliation in between would read as a cash break."""
    if day > now.date():
        raise UserError(f"cannot mark {day}: it is after today ({now.date()}), nothing has settled yet")
    return min(dt.datetime.combine(day, SETTLEMENT_TIME, tzinfo=dt.timezone.utc), now)


def mark_settlements(session, day: dt.date | None = None) -> tuple[dt.date, MarkResult]:
    """Mark every held future to `day`'s stored settlement price (default: today by the environment's
    clock); returns (day, what `mark_day` did)."""
    from tradeledger.engine.accounting.holdings import known_contracts

    env, now = session, session.now()
    day = day or now.date()
    when = settlement_booking_time(day, now)
    return day, mark_day(env, known_contracts(env.ledger), day, settlement_prices(env, day), when)


def settle_at_sim_exchange(session, contract: str, price: Decimal, day: dt.date | None = None) -> tuple[dt.date, Decimal]:
    """`sim settle`: the simulated exchange settles a contract (its cash moves at the broker) and the
    settlement price is recorded for `mark`. (the day, the cash moved)"""
    from tradeledger.engine.targets.prices import store_settlement

    day = day or session.now().date()
    cash = session.exchange().settle(contract, price, day)
    store_settlement(session, contract, day, price, "sim settle")
    return day, cash
