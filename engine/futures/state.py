"""Each instrument's roll situation on a day, read from the calendar, the user's pinned state and
the stored prices: the input `engine/trading/orders.plan` routes exposure changes with.

The old contract of a roll is the one listed before the current contract, while it still trades
(its last trading day is today or later). Reference prices are each contract's latest mark: its
latest settlement, else the instrument's close the run was sized with.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.futures import calendar as cal
from tradeledger.engine.futures.rolls import FORCE, FORCE_OUTRIGHT, STATES, InstrumentRoll, calendar_state
from tradeledger.engine.setup.config import Instrument, TradingConfig, current_contract, to_contract
from tradeledger.ledger.numbers import from_scaled


def overrides(conn, instrument: Instrument | None = None) -> dict[str, dt.date]:
    """code -> last trading day the broker gave (contract_detail), the truth over the rule."""
    t = tables.contract_detail
    query = sa.select(t.c.code, t.c.last_trade_date)
    if instrument is not None:
        query = query.where(t.c.instrument == instrument.name)
    return {code: dt.date.fromisoformat(day) for code, day in conn.execute(query) if day}


def pinned_states(conn) -> dict[str, str]:
    t = tables.roll_state
    return {name: state for name, state in conn.execute(sa.select(t.c.instrument, t.c.state))}


def old_and_new(instrument: Instrument, on: dt.date, known: dict | None = None
                ) -> tuple[cal.ContractDates | None, cal.ContractDates]:
    """(the contract being rolled out of, or None; the current contract) on `on`."""
    new = cal.current(instrument.schedule, on, known)
    listed = cal.chain(instrument.schedule, on, 8, known)
    before = [d for d in listed if d.last_trade < new.last_trade]
    return (before[-1] if before else None), new


def latest_settlements(conn, codes: list[str], on: dt.date) -> dict[str, Decimal]:
    s = tables.settlement
    result = {}
    for code in codes:
        row = conn.execute(sa.select(s.c.price).where(s.c.contract == code, s.c.date <= on.isoformat())
                           .order_by(s.c.date.desc()).limit(1)).first()
        if row is not None:
            result[code] = from_scaled(row[0])
    return result


def instrument_roll(config: TradingConfig, name: str, on: dt.date, conn, price: Decimal | None = None,
                    pinned: dict | None = None, spreads: bool = True, known: dict | None = None,
                    held_codes: tuple[str, ...] = ()) -> InstrumentRoll:
    """The roll situation of instrument `name` on `on` (a share never rolls)."""
    instrument = config.instruments[name]
    if not instrument.is_future:
        contract = current_contract(instrument, on)
        return InstrumentRoll(name, "no_roll", "calendar", None, contract, {contract.code: price} if price else {})
    known = overrides(conn, instrument) if known is None else known
    old, new = old_and_new(instrument, on, known)
    pinned = pinned_states(conn) if pinned is None else pinned
    if name in pinned:
        state, source = pinned[name], "user"
    else:
        state = calendar_state(old.roll_start if old else None, old.force_from if old else None, on)
        source = "calendar"
    if state == FORCE and not spreads:
        state = FORCE_OUTRIGHT
    assert state in STATES, state
    new_contract = to_contract(instrument, new.code, new.expiry)
    old_contract = to_contract(instrument, old.code, old.expiry) if old else None
    contracts = {code: to_contract(instrument, code, cal.find(instrument.schedule, code, known).expiry)
                 for code in held_codes}
    codes = sorted({new.code, *(c for c in [old.code if old else None] if c), *held_codes})
    prices = latest_settlements(conn, codes, on)
    if price is not None:
        prices[new.code] = price  # the price the run was sized with
        for code in codes:
            prices.setdefault(code, price)
    return InstrumentRoll(name, state, source, old_contract, new_contract, prices, contracts)
