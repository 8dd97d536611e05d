"""Unit and property tests for engine/netting.py (crosses, residual order, fill and commission
allocation)."""

from __future__ import annotations

from decimal import Decimal as D
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeledger.engine.trading.netting import (
    Cross,
    NettingPlan,
    allocate_commission,
    allocate_fill,
    net_changes,
)


# --- the worked example (EXAMPLES.md) ---------------------------------------------------------


def test_examples_day1_cross_and_residual():
    plan = net_changes({"B": D("-1"), "A": D("3")}, D("90000"))
    assert plan.reference_price == D("90000")
    assert plan.changes == (("A", D(3)), ("B", D(-1)))
    assert plan.crosses == (Cross("B", "A", D(1)),)
    seller, buyer, qty = plan.crosses[0]  # a plain (seller, buyer, qty) tuple too
    assert (seller, buyer, qty) == ("B", "A", D(1))
    assert (plan.side, plan.quantity) == ("BUY", D(2))
    assert plan.residual_shares == (("A", D(2)),)
    assert plan.crossed_by("A") == D(1) and plan.crossed_by("B") == D(-1)
    # fills E1 (1) and E2 (1) both go to A; commissions 2.00 each
    first = allocate_fill(plan, D(1), {})
    assert first == {"A": D(1)}
    assert allocate_fill(plan, D(1), first) == {"A": D(1)}
    assert allocate_commission(D("2.00"), first) == {"A": D("2.00")}


def test_examples_day2_flip_is_one_sell_order():
    plan = net_changes({"A": D("-5"), "B": D("0")}, D("90400"))
    assert plan.crosses == () and plan.changes == (("A", D(-5)),)
    assert (plan.side, plan.quantity, plan.shares) == ("SELL", D(5), {"A": D(5)})
    assert allocate_fill(plan, D(5)) == {"A": D(5)}
    assert allocate_commission(D("10.00"), {"A": D(5)}) == {"A": D("10.00")}


# --- more hand-worked netting -----------------------------------------------------------------


def test_larger_side_shares_the_cross_pro_rata():
    # buys A 3, B 1 = 4; sells C 2. Crossed 2 split 3:1 -> quotas 1.5, 0.5 -> floors 1, 0,
    # remainders 0.5 and 0.5 tie -> A (name order): A crosses 2, B 0.
    plan = net_changes({"A": D(3), "B": D(1), "C": D(-2)}, D("100"))
    assert plan.crosses == (Cross("C", "A", D(2)),)
    assert (plan.side, plan.quantity) == ("BUY", D(2))
    assert plan.residual_shares == (("A", D(1)), ("B", D(1)))


def test_everything_crosses_when_sides_balance():
    # sellers C 3, D 1 walk against buyers A 2, B 2 in name order
    plan = net_changes({"A": D(2), "B": D(2), "C": D(-3), "D": D(-1)}, D("-12.5"))
    assert plan.crosses == (Cross("C", "A", D(2)), Cross("C", "B", D(1)), Cross("D", "B", D(1)))
    assert plan.side is None and plan.quantity == D(0) and plan.residual_shares == ()
    assert plan.crossed_quantity == D(4)
    assert plan.reference_price == D("-12.5")  # futures may trade below zero


def test_no_changes_is_an_empty_plan():
    plan = net_changes({}, D("1"))
    assert plan == NettingPlan(D(1), (), (), None, D(0), ())
    with pytest.raises(ValueError, match="overfill"):
        allocate_fill(plan, D(1))


def test_partial_fills_follow_the_cumulative_quota():
    # shares A 3, B 1 (order BUY 4), filled 2, then 1, then 1.
    # after 2: quotas 1.5 / 0.5 -> tie -> A 2, B 0
    # after 3: quotas 2.25 / 0.75 -> A stays 2, B's remainder 0.75 wins -> B 1
    # after 4: everybody at their share
    shares = {"A": D(3), "B": D(1)}
    first = allocate_fill(shares, D(2), {})
    assert first == {"A": D(2)}
    second = allocate_fill(shares, D(1), first)
    assert second == {"B": D(1)}
    third = allocate_fill(shares, D(1), {"A": D(2), "B": D(1)})
    assert third == {"A": D(1)}


def test_commission_split_hand_worked():
    # 2.00 over 1, 1, 1: 200 cents -> 66.67 each -> 66 + one leftover cent each to A and B
    assert allocate_commission(D("2.00"), {"C": D(1), "A": D(1), "B": D(1)}) == {
        "A": D("0.67"), "B": D("0.67"), "C": D("0.66")}
    # 10.00 over 3 and 2: 6.00 and 4.00
    assert allocate_commission(D("10.00"), {"A": D(3), "B": D(2)}) == {"A": D("6.00"), "B": D("4.00")}
    # precision follows the commission: 1.5 -> tenths; a rebate keeps its sign
    assert allocate_commission(D("1.5"), {"A": D(1), "B": D(1)}) == {"A": D("0.8"), "B": D("0.7")}
    assert allocate_commission(D("-0.05"), {"A": D(1), "B": D(1)}) == {"A": D("-0.03"), "B": D("-0.02")}
    assert allocate_commission(D("0.00"), {"A": D(2)}) == {"A": D("0.00")}
    # an empty label is allowed (callers key the unattributed holder as "")
    assert allocate_commission(D("3.00"), {"": D(1), "A": D(2)}) == {"": D("1.00"), "A": D("2.00")}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: net_changes({"A": D("1.5")}, D(1)), "whole number"),
        (lambda: net_changes({"A": D("NaN")}, D(1)), "finite"),
        (lambda: net_changes({"A": 1.0}, D(1)), "Decimal, got float"),
        (lambda: net_changes({None: D(1)}, D(1)), "must be strings"),
        (lambda: net_changes({"A": D(1)}, D("Infinity")), "reference price must be finite"),
        (lambda: net_changes([("A", D(1))], D(1)), "mapping"),
        (lambda: allocate_fill({"A": D(2)}, D(3)), "overfill"),
        (lambda: allocate_fill({"A": D(2)}, D(1), {"A": D(2)}), "overfill"),
        (lambda: allocate_fill({"A": D(2)}, D(0)), "positive"),
        (lambda: allocate_fill({"A": D(2)}, D(-1)), "negative"),
        (lambda: allocate_fill({"A": D(2)}, D("0.5")), "whole number"),
        (lambda: allocate_fill({"A": D(2)}, D(1), {"B": D(1)}), "no residual share"),
        (lambda: allocate_fill({"A": D(2)}, D(1), {"A": D(3)}), "more than its share"),
        (lambda: allocate_fill({"A": D(-2)}, D(1)), "negative"),
        (lambda: allocate_commission(D("NaN"), {"A": D(1)}), "finite"),
        (lambda: allocate_commission(D("2.00"), {}), "no quantity"),
        (lambda: allocate_commission(D("2.00"), {"A": D(0)}), "no quantity"),
        (lambda: allocate_commission(D("2.00"), {"A": D(-1)}), "negative"),
        (lambda: allocate_commission(2.0, {"A": D(1)}), "Decimal, got float"),
    ],
)
def test_bad_inputs_raise_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- properties -------------------------------------------------------------------------------

names = st.sampled_from(["alpha", "beta", "carry", "delta", "echo", "trend_fast", "trend_slow"])
changes_st = st.dictionaries(names, st.integers(-50, 50).map(D), max_size=7)


@st.composite
def plan_and_fills(draw):
    plan = net_changes(draw(changes_st), D("100.25"))
    total = int(plan.quantity)
    fills: list[int] = []
    while sum(fills) < total:
        fills.append(draw(st.integers(1, total - sum(fills))))
    return plan, fills


@settings(max_examples=200, deadline=None)
@given(changes_st)
def test_netting_is_zero_sum_and_conserves_every_change(changes):
    plan = net_changes(changes, D("1"))
    assert all(c.quantity > 0 and c.seller != c.buyer for c in plan.crosses)
    assert sum(plan.crossed_by(s) for s in changes) == 0  # crosses are transfers
    signed_residual = plan.quantity if plan.side == "BUY" else -plan.quantity
    assert signed_residual == sum(changes.values(), D(0))
    assert plan.quantity == sum(plan.shares.values(), D(0))
    # each strategy either only buys or only sells, and never more than its change
    for s, change in changes.items():
        crossed = plan.crossed_by(s)
        assert abs(crossed) <= abs(change) and crossed * change >= 0
    # only one side reaches the broker
    total_buy = sum(q for q in changes.values() if q > 0)
    total_sell = -sum(q for q in changes.values() if q < 0)
    assert plan.crossed_quantity == min(total_buy, total_sell)
    assert [c for c, _ in plan.changes] == sorted(c for c, q in changes.items() if q)


@settings(max_examples=200, deadline=None)
@given(plan_and_fills())
def test_fills_sum_never_overshoot_and_full_fill_reaches_every_target(case):
    plan, fills = case
    shares = plan.shares
    total = sum(shares.values(), D(0))
    allocated: dict[str, D] = {}
    for qty in fills:
        part = allocate_fill(plan, D(qty), allocated)
        assert sum(part.values(), D(0)) == qty
        assert all(v > 0 for v in part.values())
        for s, v in part.items():
            allocated[s] = allocated.get(s, D(0)) + v
            assert allocated[s] <= shares[s]  # never overshoot a strategy's need
        # the cumulative allocation stays close to the pro rata quota
        filled = sum(allocated.values(), D(0))
        for s, share in shares.items():
            quota = Fraction(int(filled) * int(share), int(total))
            assert abs(int(allocated.get(s, D(0))) - quota) < 1
    assert allocated == {s: q for s, q in shares.items()}
    sign = 1 if plan.side == "BUY" else -1
    for s, change in plan.changes:
        assert plan.crossed_by(s) + sign * allocated.get(s, D(0)) == change


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(names, st.integers(1, 10), min_size=1, max_size=7),
    st.integers(1, 70),
)
def test_single_fill_is_hamilton_apportionment(shares, qty):
    total = sum(shares.values())
    qty = min(qty, total)
    part = allocate_fill({s: D(q) for s, q in shares.items()}, D(qty))
    assert sum(part.values()) == qty
    for s, q in shares.items():
        quota = Fraction(qty * q, total)
        assert int(quota) <= part.get(s, 0) <= int(quota) + 1


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.integers(-5000, 50000), st.sampled_from([0, 2, 4])),  # units, decimal places
    st.dictionaries(names, st.integers(0, 40).map(D), min_size=1, max_size=7),
)
def test_commission_parts_sum_exactly(commission_parts, allocation):
    units, places = commission_parts
    commission = D(units).scaleb(-places)
    if not any(allocation.values()):
        with pytest.raises(ValueError):
            allocate_commission(commission, allocation)
        return
    parts = allocate_commission(commission, allocation)
    assert sum(parts.values(), D(0)) == commission
    assert set(parts) == {s for s, q in allocation.items() if q}
    quantum = D(1).scaleb(-places)
    total_qty = sum(allocation.values())
    for s, part in parts.items():
        assert part.as_tuple().exponent == -places
        exact = Fraction(commission) * Fraction(allocation[s]) / Fraction(total_qty)
        assert abs(Fraction(part) - exact) < Fraction(quantum)


def test_a_commission_is_split_by_its_value_not_by_how_it_was_written():
    """The sim's 1126 x 0.005 = 5.630 was split in tenths of a cent (3.795 + 1.835) while the stored
    fill, read back as 5.63, splits in cents (3.80 + 1.83): report costs and pnl differed by a cent."""
    from decimal import Decimal as D

    from tradeledger.engine.accounting.entries import commission_split

    shares = [("Etf-trend", D(759)), ("Tactical", D(367))]
    assert commission_split(D("5.630"), shares) == commission_split(D("5.63"), shares) == \
        {"Etf-trend": D("3.80"), "Tactical": D("1.83")}
    assert commission_split(D("1.375"), shares) == {"Etf-trend": D("0.927"), "Tactical": D("0.448")}
    assert sum(commission_split(D("1"), shares).values()) == D("1.00")
