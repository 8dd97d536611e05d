"""Expiry is a settlement (DESIGN.md, second round).

At expiry the broker sends no execution: the position simply disappears (IB may show it once with
quantity 0), and a cash-settled contract pays its last variation margin at the *final settlement
price*. The ledger books the same thing per holder: the mark chain's last step, from the holder's
mark to the final settlement price, and the close of the position at that price, in one entry per
contract (`booking.expiry_entry`). No position is left behind for reconciliation to call a break.

A contract is expired when its last trading day (the broker's contract details when stored, else
the instrument's rule) is before today, or is today and its final settlement price is in: the
exchange settles it at that day's close and the broker's position goes the same evening, so a
reconciliation after the settlement books the expiry rather than calling it a break until midnight
(`has_expired`). It is booked only when the broker no longer shows it:
a position the broker still holds after its last trading day is a break for a person to look at,
not something to settle by guess. The final settlement price is the contract's settlement on its
last trading day (or later); without one, an exception names the contract and the row to import
(`date,contract,settle`), and nothing is booked until it arrives.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import expiry_entry
from tradeledger.engine.accounting.holdings import known_contracts, load_holdings, save_marks
from tradeledger.engine.futures import calendar as cal
from tradeledger.engine.futures.interrupted import resolve_rolled
from tradeledger.engine.futures.state import overrides
from tradeledger.engine.setup.config import TradingConfig, instrument_of_contract
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception, resolve_by_key
from tradeledger.engine.trading.marking import futures_held
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled


@dataclass
class ExpiryReport:
    booked: list[tuple[str, Decimal]] = field(default_factory=list)  # (contract, final price)
    missing_price: list[str] = field(default_factory=list)
    still_at_broker: list[str] = field(default_factory=list)


def last_trading_day(config: TradingConfig, code: str, known: dict) -> dt.date | None:
    instrument = instrument_of_contract(config, code)
    if instrument is None or not instrument.is_future:
        return None
    return cal.find(instrument.schedule, code, known).last_trade


def has_expired(last: dt.date, today: dt.date, final_price: Decimal | None) -> bool:
    """Whether a contract whose last trading day is `last` has expired by `today` (pure): once that
    day has passed, or on it once its final settlement price is known (the exchange's close)."""
    return last < today or (last == today and final_price is not None)


def expired_held(ctx: Context, today: dt.date) -> list[tuple[str, dt.date]]:
    """(contract, last trading day) of every future the ledger holds whose last trading day is today
    or has passed: the contracts that may have expired (`has_expired` decides with the price)."""
    engine = ctx.engine
    with read_connection(engine) as conn:
        known = overrides(conn)
    result = []
    for code in futures_held(ctx):
        last = last_trading_day(ctx.config, code, known)
        if last is not None and last <= today:
            result.append((code, last))
    return result


def final_settlement(conn, code: str, last: dt.date) -> Decimal | None:
    """The settlement on the last trading day, else the first one after it (the exchange's final)."""
    s = tables.settlement
    row = conn.execute(sa.select(s.c.price).where(s.c.contract == code, s.c.date >= last.isoformat())
                       .order_by(s.c.date).limit(1)).first()
    return from_scaled(row[0]) if row is not None else None


def missing_key(account: str, code: str) -> str:
    return dedupe_key(ExceptionKind.MISSING_FINAL_SETTLEMENT, account, code)


def settle_expired(ctx: Context, broker_codes: set[str] | None,
                   today: dt.date, now: dt.datetime) -> ExpiryReport:
    """Book the final settlement of every expired contract the broker no longer shows
    (`broker_codes`: contracts with a non-zero position at the broker; None: not asked)."""
    engine, ledger, chart = ctx.engine, ctx.ledger, ctx.chart

    report = ExpiryReport()
    contracts = None
    for code, last in expired_held(ctx, today):
        if broker_codes is None or code in broker_codes:
            if last < today:
                report.still_at_broker.append(code)
            continue
        with engine.begin() as conn:
            price = final_settlement(conn, code, last)
            if not has_expired(last, today, price):
                continue  # its last trading day, before the close: still trading (a missing position is a break)
            if price is None:
                report.missing_price.append(code)
                raise_exception(conn, ExceptionKind.MISSING_FINAL_SETTLEMENT, code,
                                f"{code} expired on {last} and the broker no longer holds it, but there is no "
                                f"final settlement price: import `date,contract,settle` with the row "
                                f"`{last.isoformat()},{code},PRICE` and run again", severity="error",
                                dedupe_key=missing_key(chart.broker_account, code), now=now)
                continue
            contracts = contracts or known_contracts(ledger, conn)
            contract = contracts[code]
            holdings = load_holdings(conn, ctx.books, contract)
            when = dt.datetime.combine(last, dt.time(23, 0), tzinfo=dt.timezone.utc)
            txn, after = expiry_entry(chart, contract, last, min(when, now), price, holdings)
            if txn is None:
                continue
            if ledger.book(txn, conn).created:
                save_marks(conn, contract, after, now)
                report.booked.append((code, price))
                resolve_rolled(conn, ctx.books, ctx.config, now)  # an expired old leg may end a half roll
            resolve_by_key(conn, missing_key(chart.broker_account, code), "expiry", "final settlement booked", now=now)
    return report
