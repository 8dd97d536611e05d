"""Each instrument's roll situation on a day, read from the calendar, the user's pinned state and
the stored prices: the input `engine/trading/orders.plan` routes exposure changes with.

The old contract of a roll is the one listed before the current contract, while it still trades
(its last trading day is today or later). Reference prices are each contract's latest mark: its
latest settlement, else the instrument's close the run was sized with (for the priced contract,
that close when it is newer than the settlement: `reference_prices`).
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


def latest_settlements(conn, codes: list[str], on: dt.date) -> dict[str, tuple[dt.date, Decimal]]:
    """code -> (date, price) of its latest settlement on or before `on`."""
    s = tables.settlement
    result = {}
    for code in codes:
        row = conn.execute(sa.select(s.c.date, s.c.price).where(s.c.contract == code, s.c.date <= on.isoformat())
                           .order_by(s.c.date.desc()).limit(1)).first()
        if row is not None:
            result[code] = (dt.date.fromisoformat(row[0]), from_scaled(row[1]))
    return result


def reference_prices(codes: list[str], settled: dict[str, tuple[dt.date, Decimal]], new: str,
                     price: Decimal | None, price_date: dt.date | None) -> dict[str, Decimal]:
    """Each contract's reference price (pure): its latest settlement (the holders' mark); the new
    contract's is the price the run was sized with when that price is newer than its settlement
    (or it has none); a contract with neither takes the sizing price too. A newer settlement wins
    over an older close: crossing at a stale price moves value from one strategy to the other."""
    prices = {code: settled[code][1] for code in codes if code in settled}
    if price is not None:
        if new not in settled or (price_date is not None and price_date > settled[new][0]):
            prices[new] = price
        for code in codes:
            prices.setdefault(code, price)
    return prices


def instrument_roll(config: TradingConfig, name: str, on: dt.date, conn, price: Decimal | None = None,
                    pinned: dict | None = None, spreads: bool = True, known: dict | None = None,
                    held_codes: tuple[str, ...] = (), price_date: dt.date | None = None) -> InstrumentRoll:
    """The roll situation of instrument `name` on `on` (a share never rolls); `price` (of
    `price_date`) is what the run was sized with."""
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
    prices = reference_prices(codes, latest_settlements(conn, codes, on), new.code, price, price_date)
    return InstrumentRoll(name, state, source, old_contract, new_contract, prices, contracts)
