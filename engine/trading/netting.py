"""Netting strategies' changes for one contract, and allocating broker fills and commissions.

The model (DESIGN.md, "The chain", point 3): several strategies share one broker account. For
one contract, each strategy wants to change its position by a signed whole number of contracts
(its approved target minus its ledger position). Sending each change to the broker separately
would pay commission and spread on trades that cancel out, so:

1. **Cross.** Opposite changes are first matched internally, as transfers between strategies at
   the plan's reference price (the latest mark). A cross is zero-sum: no broker, no commission.
   The crossed quantity is ``min(total bought, total sold)``. The side with more demand has to
   share that quantity among its strategies; it does so pro rata to their changes (whole
   contracts, largest remainder), so that every strategy on that side gets the same fraction
   of its trade at the internal price. The other side is crossed in full.
2. **Residual.** What is left is one broker order (side, quantity) on behalf of the strategies
   of the residual side, each with its *residual share* (its change minus what it crossed).
3. **Allocate fills.** Each broker fill, partial or not, is split among the residual-side
   strategies so that after every fill the cumulative allocation tracks the cumulative filled
   quantity pro rata to the residual shares: whole contracts, largest remainder, never more than
   a strategy's share. When the order is completely filled every strategy has exactly its
   share, so cross + allocation = its change.
4. **Allocate commissions.** A fill's commission is split pro rata to the quantities allocated,
   in the smallest unit of the commission's own precision (cents for ``Decimal("2.00")``), with
   the leftover units by largest remainder, so the parts sum exactly to the commission.

Worked case (EXAMPLES.md): A +3, B -1 -> cross B -> A 1 at the reference price; residual BUY 2
for A, who then receives all of fills E1 (1) and E2 (1).

Determinism: strategies are processed in name order and ties in remainders go to the name that
sorts first, so the same inputs always give the same plan and the same split, on any machine.
Remainders are computed with exact fractions; quantities are whole-number ``Decimal``s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import NamedTuple

from tradeledger.broker.base import BUY, SELL
from tradeledger.ledger.numbers import exact_decimal

ZERO = Decimal(0)


class Overfill(ValueError):
    """Fills beyond what the order is for: the execution cannot be allocated."""


class Cross(NamedTuple):
    """An internal transfer: `seller` sells `quantity` contracts to `buyer` at the plan's
    reference price."""

    seller: str
    buyer: str
    quantity: Decimal


@dataclass(frozen=True)
class NettingPlan:
    """The netting of one contract's changes. All quantities are whole, positive ``Decimal``s
    except `changes`, which keeps each strategy's signed change as given."""

    reference_price: Decimal
    changes: tuple[tuple[str, Decimal], ...]  # (strategy, signed change), by name, non-zero only
    crosses: tuple[Cross, ...]
    side: str | None  # BUY, SELL, or None when everything crossed
    quantity: Decimal  # the residual broker order's quantity; 0 when side is None
    residual_shares: tuple[tuple[str, Decimal], ...]  # (strategy, share) on the residual side

    @property
    def crossed_quantity(self) -> Decimal:
        return sum((c.quantity for c in self.crosses), ZERO)

    @property
    def shares(self) -> dict[str, Decimal]:
        """The residual shares as a mapping, in name order."""
        return dict(self.residual_shares)

    def crossed_by(self, strategy: str) -> Decimal:
        """The signed quantity `strategy` gets through crosses (+ bought, - sold)."""
        bought = sum((c.quantity for c in self.crosses if c.buyer == strategy), ZERO)
        sold = sum((c.quantity for c in self.crosses if c.seller == strategy), ZERO)
        return bought - sold


def net_changes(changes: Mapping[str, Decimal], reference_price: Decimal) -> NettingPlan:
    """Plan the crosses and the residual broker order for one contract's changes."""
    price = exact_decimal(reference_price, "reference price")
    signed = {name: _whole(qty, f"change of {name!r}", allow_negative=True)
              for name, qty in _by_name(changes, "changes")}
    signed = {name: qty for name, qty in signed.items() if qty}
    buys = [(name, int(qty)) for name, qty in signed.items() if qty > 0]
    sells = [(name, int(-qty)) for name, qty in signed.items() if qty < 0]
    total_buy, total_sell = sum(q for _, q in buys), sum(q for _, q in sells)
    crossed = min(total_buy, total_sell)

    # The larger side shares the crossed quantity pro rata; the smaller is crossed in full
    # (its apportionment of its own total gives each strategy its whole change).
    buy_crossed = _apportion(crossed, buys)
    sell_crossed = _apportion(crossed, sells)
    crosses = _pair(sell_crossed, buy_crossed)

    if total_buy > total_sell:
        side, residual = BUY, [(n, q - buy_crossed[n]) for n, q in buys]
    elif total_sell > total_buy:
        side, residual = SELL, [(n, q - sell_crossed[n]) for n, q in sells]
    else:
        side, residual = None, []
    shares = tuple((n, Decimal(q)) for n, q in residual if q)
    return NettingPlan(
        reference_price=price,
        changes=tuple(signed.items()),
        crosses=crosses,
        side=side,
        quantity=Decimal(abs(total_buy - total_sell)),
        residual_shares=shares,
    )


def allocate_fill(
    plan_or_weights: NettingPlan | Mapping[str, Decimal],
    filled_qty: Decimal,
    already_allocated: Mapping[str, Decimal] | None = None,
) -> dict[str, Decimal]:
    """Split one broker fill of `filled_qty` among the residual-side strategies.

    `filled_qty` is the quantity of *this* fill (positive, whole); `already_allocated` is what
    earlier fills of the same order gave each strategy. The cumulative allocation after this fill
    is the largest-remainder apportionment of the cumulative filled quantity pro rata to the
    residual shares, kept at or above what each strategy already has and at or below its share.
    Returns the strategies receiving part of this fill (non-zero only, name order); the values
    sum exactly to `filled_qty`. Filling more than the order's quantity is an error.
    """
    if isinstance(plan_or_weights, NettingPlan):
        share_items = list(plan_or_weights.residual_shares)
    else:
        share_items = _by_name(plan_or_weights, "residual shares")
    shares = [(n, int(_whole(q, f"share of {n!r}", allow_negative=False))) for n, q in share_items]
    shares = [(n, q) for n, q in shares if q]
    total_share = sum(q for _, q in shares)
    qty = int(_whole(filled_qty, "filled quantity", allow_negative=False))
    if qty == 0:
        raise ValueError("filled quantity must be positive")
    known = {n for n, _ in shares}
    before: dict[str, int] = {n: 0 for n in known}
    for name, amount in _by_name(already_allocated or {}, "already allocated"):
        amount = int(_whole(amount, f"allocation of {name!r}", allow_negative=False))
        if amount and name not in known:
            raise ValueError(f"{name!r} has an allocation but no residual share")
        if amount:
            before[name] = amount
    for name, share in shares:
        if before[name] > share:
            raise ValueError(f"{name!r} was allocated {before[name]}, more than its share {share}")
    cumulative = sum(before.values()) + qty
    if cumulative > total_share:
        raise Overfill(f"overfill: {cumulative} filled in total, but the order is for {total_share}")
    if len(shares) == 1:  # one strategy on the residual side (the common case): all of it
        return {shares[0][0]: Decimal(qty)}
    after = _apportion(cumulative, shares, floors=before)
    return {n: Decimal(after[n] - before[n]) for n, _ in shares if after[n] != before[n]}


def allocate_commission(
    commission: Decimal, allocation: Mapping[str, Decimal]
) -> dict[str, Decimal]:
    """Split `commission` pro rata to the allocated quantities, summing to it exactly.

    Parts are in units of the commission's own exponent (``Decimal("2.00")`` -> cents) with the
    leftover units by largest remainder. A negative commission (a rebate) is split the same way
    and keeps its sign. Only strategies with a positive quantity receive a part.
    """
    amount = exact_decimal(commission, "commission")
    exponent = amount.as_tuple().exponent
    quantum = Decimal((0, (1,), exponent))
    units = int(amount.scaleb(-exponent))  # exact: the commission in its smallest unit
    weights = [(n, int(_whole(q, f"quantity of {n!r}", allow_negative=False)))
               for n, q in _by_name(allocation, "allocation")]
    weights = [(n, q) for n, q in weights if q]
    if not weights:
        raise ValueError("cannot allocate a commission over no quantity")
    if len(weights) == 1:  # one strategy pays it all
        return {weights[0][0]: (Decimal(units) * quantum).quantize(quantum)}
    parts = _apportion(abs(units), weights, capped=False)
    sign = -1 if units < 0 else 1
    return {n: (Decimal(sign * parts[n]) * quantum).quantize(quantum) for n, _ in weights}


# ---------------------------------------------------------------------------------------------
# Apportionment


def _apportion(
    total: int,
    weights: list[tuple[str, int]],
    floors: Mapping[str, int] | None = None,
    *,
    capped: bool = True,
) -> dict[str, int]:
    """Largest-remainder (Hamilton) apportionment of `total` pro rata to `weights`.

    Without floors this is plain Hamilton: the floor of each exact quota, then one more unit to
    the largest remainders, ties by name. With floors (what earlier fills already gave), a result
    is never below its floor: quotas below a floor are raised to it and the excess is taken back
    from the allocations furthest above their quota. Each result is at most its weight unless
    not `capped` (200 cents over quantities 1 and 1 is not capped at 1).

    Fairness across partial fills: quotas only grow as fills accumulate, so floors that were
    within one unit of the earlier quotas are at most the ceiling of the new ones, and every
    adjustment moves a unit with a remainder of less than one; the cumulative allocation thus
    stays within one unit of its exact quota after every fill (a property test checks it).
    """
    floors = floors or {}
    grand = sum(w for _, w in weights)
    cap = {n: (w if capped else total) for n, w in weights}
    if total > sum(cap.values()) or sum(floors.values()) > total:
        raise AssertionError(f"cannot apportion {total} within {floors} .. {cap}")  # caller bug
    if total == 0:
        return {n: floors.get(n, 0) for n, _ in weights}
    quota = {n: Fraction(total * w, grand) for n, w in weights}
    result = {n: min(cap[n], max(floors.get(n, 0), int(quota[n]))) for n, _ in weights}
    names = [n for n, _ in weights]
    missing = total - sum(result.values())
    # Each pass moves at most one unit per strategy so that the ranking stays fair; the number
    # of passes is small because quotas and floors are within one unit of the result.
    while missing > 0:
        room = [n for n in names if result[n] < cap[n]]
        room.sort(key=lambda n: (-(quota[n] - result[n]), n))
        for n in room[:missing]:
            result[n] += 1
        missing = total - sum(result.values())
    while missing < 0:
        over = [n for n in names if result[n] > floors.get(n, 0)]
        over.sort(key=lambda n: (-(result[n] - quota[n]), n))
        for n in over[:-missing]:
            result[n] -= 1
        missing = total - sum(result.values())
    return result


def _pair(sellers: Mapping[str, int], buyers: Mapping[str, int]) -> tuple[Cross, ...]:
    """Match crossed sell and buy quantities into seller -> buyer transfers, walking both sides
    in name order (equal totals). Any pairing is zero-sum; this one is short and deterministic."""
    crosses: list[Cross] = []
    buy_queue = [[n, q] for n, q in buyers.items() if q]
    i = 0
    for seller, qty in sellers.items():
        while qty:
            buyer, need = buy_queue[i]
            moved = min(qty, need)
            crosses.append(Cross(seller, buyer, Decimal(moved)))
            qty -= moved
            buy_queue[i][1] -= moved
            if buy_queue[i][1] == 0:
                i += 1
    return tuple(crosses)


# ---------------------------------------------------------------------------------------------
# Input checks


def _by_name(mapping: Mapping[str, object], what: str) -> list[tuple[str, object]]:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping of strategy -> quantity, got {mapping!r}")
    # Any string is a usable label (callers may key the unattributed holder as ""); anything
    # else could not be sorted deterministically against the names.
    for name in mapping:
        if not isinstance(name, str):
            raise ValueError(f"{what}: strategy names must be strings, got {name!r}")
    return sorted(mapping.items())


def _whole(value: object, what: str, *, allow_negative: bool) -> Decimal:
    value = exact_decimal(value, what)
    if value != value.to_integral_value(rounding=ROUND_FLOOR):
        raise ValueError(f"{what} must be a whole number of contracts, got {value}")
    if value < 0 and not allow_negative:
        raise ValueError(f"{what} must not be negative, got {value}")
    return Decimal(int(value))
