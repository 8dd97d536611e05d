"""Roll states: which contract of an instrument each order trades, and when a position moves on.

States (pysystemtrade's production names), per instrument:

    no_roll         everything trades the contract being held (the old one while it trades)
    passive         reductions trade the old contract, increases the new one: the position drifts
                    across as the strategy trades
    force           what is left in the old contract moves to the new one now, as a calendar
                    spread (one order, two legs), netted across strategies
    force_outright  the same move as two outright orders, netted with the other changes
    close           only reductions (the old contract first); nothing opens

The *calendar* sets the state (`calendar_state`): no_roll until the old contract's roll window
opens, passive from `roll_start`, force from `force_from` (engine/futures/calendar.py). A user can
pin a state (`tradeledger roll set MES force`; `auto` gives it back to the calendar); it is stored
in `roll_state`.

`route` is the pure decision: one holder's exposure change, given what it holds in each contract,
becomes outright changes per contract plus a quantity to roll by spread. Whatever the state, the
changes sum to the exposure change and the roll moves units from old to new one for one, so a roll
never changes exposure (a property test checks it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from tradeledger.broker.base import Contract

NO_ROLL, PASSIVE, FORCE, FORCE_OUTRIGHT, CLOSE = "no_roll", "passive", "force", "force_outright", "close"
STATES = (NO_ROLL, PASSIVE, FORCE, FORCE_OUTRIGHT, CLOSE)
ZERO = Decimal(0)


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


@dataclass(frozen=True)
class InstrumentRoll:
    """An instrument's roll situation on a day: its state and the two contracts involved."""

    instrument: str
    state: str
    source: str  # calendar | user
    old: Contract | None  # the contract rolled out of (None outside a roll window)
    new: Contract  # the contract new positions go into (the priced one)
    prices: dict = field(default_factory=dict)  # code -> reference price (latest mark)
    contracts: dict = field(default_factory=dict)  # code -> Contract of every held contract

    @property
    def trading(self) -> Contract:
        """Where an exposure change goes when nothing rolls (no_roll keeps the old contract)."""
        return self.old if (self.state == NO_ROLL and self.old is not None) else self.new


@dataclass(frozen=True)
class Route:
    """One holder's exposure change, routed: outright changes per contract and a spread roll."""

    outright: tuple[tuple[str, Decimal], ...]  # (contract code, signed change), non-zero only
    roll: Decimal = ZERO  # units moved from old to new by spread (the old position's sign)

    def by_contract(self) -> dict[str, Decimal]:
        return dict(self.outright)


def calendar_state(old_roll_start: dt.date | None, old_force_from: dt.date | None, on: dt.date) -> str:
    """The calendar's state on `on` for a roll window [roll_start, force_from, ...)."""
    if old_roll_start is None or on < old_roll_start:
        return NO_ROLL
    return PASSIVE if on < old_force_from else FORCE


def _reduce(change: Decimal, held: dict[str, Decimal], order: list[str], legs: dict[str, Decimal]) -> Decimal:
    """Spend the reducing part of `change` on `held` positions in `order`; return what is left."""
    for code in order:
        position = held.get(code, ZERO) + legs.get(code, ZERO)
        if change == 0 or position == 0 or _sign(position) == _sign(change):
            continue
        take = _sign(change) * min(abs(position), abs(change))
        legs[code] = legs.get(code, ZERO) + take
        change -= take
    return change


def route(state: str, change: Decimal, held: dict[str, Decimal], old: str | None, new: str) -> Route:
    """Route one holder's exposure `change` (pure).

    `held`: contract -> units of this instrument; `old`/`new`: the roll's contracts (`old` None
    outside a roll window). Reductions always spend contracts other than `new` first (oldest
    code order is the caller's: `old` first), so a forced roll never moves what is being sold.
    """
    held = {code: units for code, units in held.items() if units}
    exposure = sum(held.values(), ZERO)
    if state == CLOSE:  # only towards zero, never through it
        target = exposure + change
        target = min(max(target, ZERO), exposure) if exposure >= 0 else max(min(target, ZERO), exposure)
        change = target - exposure
    if state == NO_ROLL:
        where = old if old is not None else new
        return Route(((where, change),) if change else ())
    others = [old] if old is not None and old != new else []
    others += sorted(code for code in held if code not in (new, old))
    legs: dict[str, Decimal] = {}
    if exposure and change and _sign(change) != _sign(exposure):
        change = _reduce(change, held, others + [new], legs)
    roll = ZERO
    if state in (FORCE, FORCE_OUTRIGHT) and old is not None and old != new:
        left = held.get(old, ZERO) + legs.get(old, ZERO)
        if state == FORCE_OUTRIGHT:
            legs[old] = legs.get(old, ZERO) - left
            legs[new] = legs.get(new, ZERO) + left
        else:
            roll = left
    if change:
        legs[new] = legs.get(new, ZERO) + change
    return Route(tuple((code, qty) for code, qty in sorted(legs.items()) if qty), roll)
