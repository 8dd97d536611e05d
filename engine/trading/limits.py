"""Limits that speak: what each limit lets one contract's broker order do, in the instrument's units.

`judge` is pure. For one contract of a run it takes the order the netting wants (side, quantity)
and answers with a `Verdict`: the quantity that may go to the broker and, when that is less than
wanted, which limit said so, in words a person reads ("order of 1432 shares exceeds TLT's
max_order_qty 500 shares"). Each limit yields the largest order it allows:

    max_order_qty        L                                     (contracts or shares per order)
    max_daily_qty        L - already traded today              (same units, per contract and day)
    max_order_notional   floor(L / (price x multiplier x fx))  (base currency per order)
    max_position         L - side x position                   (|position after| <= L; reducing always allowed)
    max_notional         as max_position, L / (price x multiplier x fx)

`position` is the whole account's expected position in the contract (every holder's ledger
position plus every working order's remaining quantity), since a limit is about what the account
will hold. A limit named in the instrument's `clip` list clips the order to what it allows; any
other limit that binds refuses the contract (crosses and order) with its reason. Halts, locks and
reduce-only overrides always refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from tradeledger.engine.setup.config import LimitSet

ZERO = Decimal(0)


@dataclass(frozen=True)
class Verdict:
    quantity: Decimal  # what may be sent
    refused: str = ""  # why nothing of this contract trades
    clipped: str = ""  # why less than wanted is sent


def unit(is_future: bool, qty: Decimal | None = None) -> str:
    if is_future:
        return "contract" if qty is not None and abs(qty) == 1 else "contracts"
    return "share" if qty is not None and abs(qty) == 1 else "shares"


def _floor(x: Decimal) -> Decimal:
    return max(ZERO, x.to_integral_value(rounding=ROUND_FLOOR))


def allowed_by(limits: LimitSet, instrument: str, is_future: bool, side_sign: int, quantity: Decimal,
               position: Decimal, price: Decimal, multiplier: Decimal, fx: Decimal, traded_today: Decimal
               ) -> list[tuple[str, Decimal, str]]:
    """(limit name, largest order it allows, why) for every limit that allows less than `quantity` (pure)."""
    u = unit(is_future)
    value = abs(price) * multiplier * fx  # base currency per unit
    found = []

    def bind(name, allowed, why):
        if allowed < quantity:
            found.append((name, _floor(allowed), why))

    if limits.max_order_qty is not None:
        bind("max_order_qty", limits.max_order_qty,
             f"order of {quantity} {u} exceeds {instrument}'s max_order_qty {limits.max_order_qty} {u}")
    if limits.max_daily_qty is not None:
        bind("max_daily_qty", limits.max_daily_qty - traded_today,
             f"{traded_today} {u} already traded today + {quantity} exceeds {instrument}'s max_daily_qty "
             f"{limits.max_daily_qty} {u}")
    if limits.max_order_notional is not None and value > 0:
        bind("max_order_notional", limits.max_order_notional / value,
             f"order notional {quantity * value} exceeds {instrument}'s max_order_notional {limits.max_order_notional}")
    after = position + side_sign * quantity
    if limits.max_position is not None:
        bind("max_position", limits.max_position - side_sign * position,
             f"position {after} {u} after the order exceeds {instrument}'s max_position {limits.max_position} {u}")
    if limits.max_notional is not None and value > 0:
        bind("max_notional", limits.max_notional / value - side_sign * position,
             f"notional {abs(after) * value} after the order exceeds {instrument}'s max_notional {limits.max_notional}")
    return found


def judge(limits: LimitSet, instrument: str, is_future: bool, side: str | None, quantity: Decimal,
          position: Decimal, price: Decimal, multiplier: Decimal, fx: Decimal, traded_today: Decimal) -> Verdict:
    """What of a wanted broker order the limits let through (pure)."""
    if side is None or quantity == 0:
        return Verdict(ZERO)
    sign = 1 if side == "BUY" else -1
    binding = allowed_by(limits, instrument, is_future, sign, quantity, position, price, multiplier, fx, traded_today)
    if not binding:
        return Verdict(quantity)
    refusing = [b for b in binding if b[0] not in limits.clip]
    if refusing:
        return Verdict(ZERO, refused=refusing[0][2])
    name, allowed, why = min(binding, key=lambda b: b[1])
    return Verdict(allowed, clipped=f"{why}: clipped to {allowed} {unit(is_future, allowed)} ({name} clips)")


def override_refusal(limits_halted: frozenset, reduce_only: frozenset, locks: dict | None, instrument: str,
                     contract: str, changes: dict, current: dict, targets: dict) -> str:
    """The halt, lock or reduce-only override that stops a contract, or "" (pure)."""
    for key in (instrument, contract):
        if key and locks and key in locks:
            return f"{key} is locked: {locks[key]}"
    if instrument in limits_halted:
        return f"instrument {instrument} is halted"
    for holder, change in changes.items():
        if holder in limits_halted and change:
            return f"strategy {holder} is halted"
        if (holder in reduce_only or instrument in reduce_only) and change:
            now, target = current.get(holder, ZERO), targets.get(holder, ZERO)
            if abs(target) > abs(now) or (target and now and (target > 0) != (now > 0)) or (target and not now):
                return f"reduce-only: {holder} may not go from {now} to {target} in {instrument}"
    return ""
