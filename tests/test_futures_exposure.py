"""Exposure per instrument: a target is compared with the strategy's position summed over every
contract of the instrument, and the roll state routes the change to contracts."""

import datetime as dt
import json
from decimal import Decimal as D

from click.testing import CliRunner
from hypothesis import given, strategies as st

from tradeledger.broker.base import Contract
from tradeledger.cli import main
from tradeledger.engine.futures.rolls import (
    CLOSE, FORCE, FORCE_OUTRIGHT, NO_ROLL, PASSIVE, STATES, InstrumentRoll, route,
)
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.trading.orders import TargetLine, plan

Z = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612", "MES")
H = Contract("MESH27", "FUT", "MES", "CME", "USD", D(5), "202703", "MES")


def of(code):
    return "MES" if code.startswith("MES") else None


def test_a_position_in_the_old_contract_counts_at_the_calendar_move():
    # A holds +3 in Z; the calendar now says H. The target is still 3: nothing to buy.
    lines = [TargetLine("A", "MES", H, D(3), D(6000))]
    positions = {("A", "MESZ26"): D(3)}
    order_plan = plan(1, lines, positions, Limits(), {}, instrument_of=of)
    assert all(cp.side is None for cp in order_plan.contracts)
    # without the exposure rule the run would buy the whole target again in H (the old bug)
    old_way = plan(1, lines, positions, Limits(), {})
    assert [(cp.contract.code, cp.side, cp.quantity) for cp in old_way.contracts] == [("MESH27", "BUY", D(3))]


def test_passive_reductions_trade_the_old_contract_and_increases_the_new():
    roll = InstrumentRoll("MES", PASSIVE, "calendar", Z, H, {"MESZ26": D(6000), "MESH27": D(6050)})
    positions = {("A", "MESZ26"): D(3), ("B", "MESZ26"): D(2)}
    lines = [TargetLine("A", "MES", H, D(1), D(6050)), TargetLine("B", "MES", H, D(4), D(6050))]
    order_plan = plan(1, lines, positions, Limits(), {}, instrument_of=of, rolls={"MES": roll})
    got = {cp.contract.code: (cp.side, cp.quantity, dict(cp.changes)) for cp in order_plan.contracts}
    assert got["MESZ26"] == ("SELL", D(2), {"A": D(-2)})
    assert got["MESH27"] == ("BUY", D(2), {"A": D(0), "B": D(2)})


def test_force_outright_moves_the_old_position_netted_with_the_changes():
    roll = InstrumentRoll("MES", FORCE_OUTRIGHT, "user", Z, H, {"MESZ26": D(6000), "MESH27": D(6050)})
    positions = {("A", "MESZ26"): D(3), ("B", "MESZ26"): D(-1)}
    lines = [TargetLine("A", "MES", H, D(3), D(6050)), TargetLine("B", "MES", H, D(-1), D(6050))]
    order_plan = plan(1, lines, positions, Limits(), {}, instrument_of=of, rolls={"MES": roll})
    got = {cp.contract.code: cp for cp in order_plan.contracts}
    assert (got["MESZ26"].side, got["MESZ26"].quantity, got["MESZ26"].crossed_quantity
            if hasattr(got["MESZ26"], "crossed_quantity") else len(got["MESZ26"].crosses)) == ("SELL", D(2), 1)
    assert (got["MESH27"].side, got["MESH27"].quantity) == ("BUY", D(2))


holdings = st.dictionaries(st.sampled_from(["MESU26", "MESZ26", "MESH27"]), st.integers(-20, 20).map(D), max_size=3)


@given(st.sampled_from(STATES), holdings, st.integers(-30, 30).map(D))
def test_routing_conserves_exposure(state, held, change):
    """Whatever the state, the routed changes sum to the exposure change (close: clamped towards
    zero), and a spread roll moves units one for one: a roll never changes exposure."""
    routed = route(state, change, held, "MESZ26", "MESH27")
    exposure = sum(held.values(), D(0))
    after = {code: held.get(code, D(0)) for code in set(held) | {"MESH27", "MESZ26"}}
    for code, qty in routed.outright:
        after[code] = after.get(code, D(0)) + qty
    after["MESZ26"] -= routed.roll
    after["MESH27"] += routed.roll
    total = sum(after.values(), D(0))
    if state == CLOSE:
        assert abs(total) <= abs(exposure) and total * exposure >= 0
    else:
        assert total == exposure + change
    if state in (FORCE, FORCE_OUTRIGHT):
        assert after["MESZ26"] == 0  # nothing left in the old contract
    if state == NO_ROLL:
        assert set(dict(routed.outright)) <= {"MESZ26"}
    if state == PASSIVE and change * exposure >= 0:
        assert set(dict(routed.outright)) <= {"MESH27"}  # an increase only opens the new contract


def test_demo_runs_through_the_december_roll(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["--home", str(home), "demo", "--days", "10"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "check: clean" in result.output and "reconcile: clean" in result.output
    out = CliRunner().invoke(main, ["--home", str(home), "positions", "--json"], catch_exceptions=False).output
    rows = json.loads(out)
    rows = rows if isinstance(rows, list) else rows["rows"]
    held = {}
    for r in rows:
        held.setdefault((r["strategy"], r["contract"][:-3]), {})[r["contract"]] = D(str(r["qty"]))
    # MES rolls passively from 10 December (force from the 16th): the strategy may hold both
    # contracts, but its exposure is exactly the last run's target, never target + old position
    show = json.loads(CliRunner().invoke(main, ["--home", str(home), "targets", "show", "10", "--json"]).output)
    line = next(x for x in show["lines"] if x["strategy"] == "trend_slow" and x["instrument"] == "MES")
    assert set(held[("trend_slow", "MES")]) <= {"MESZ26", "MESH27"}
    assert sum(held[("trend_slow", "MES")].values()) == D(line["target"])
    assert sum(D(v) for v in line["explain"]["held"].values()) == D(line["current"])


@given(st.dictionaries(st.sampled_from(["A", "B", "C", "D"]),
                       st.tuples(st.integers(-20, 20).map(D), st.integers(-20, 20).map(D)), min_size=1, max_size=4))
def test_a_roll_never_changes_a_strategys_exposure(held):
    """Random holdings of several strategies in the old and the new contract, a forced roll, targets
    equal to the exposures: the plan is one spread netted across strategies (crosses on both legs,
    the residual allocated back); applied in full, every strategy's exposure is what it was and
    nothing is left in the old contract. No outright order is sent."""
    from tradeledger.engine.futures.rolls import InstrumentRoll

    z = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612", "MES")
    h = Contract("MESH27", "FUT", "MES", "CME", "USD", D(5), "202703", "MES")
    positions = {}
    for holder, (in_z, in_h) in held.items():
        positions[(holder, z.code)], positions[(holder, h.code)] = in_z, in_h
    lines = [TargetLine(holder, "MES", h, in_z + in_h, D(6060)) for holder, (in_z, in_h) in held.items()]
    roll = InstrumentRoll("MES", FORCE, "user", z, h, {z.code: D(6010), h.code: D(6060)})
    order_plan = plan(1, lines, positions, Limits(), {}, instrument_of=lambda code: "MES",
                      rolls={"MES": roll})
    assert all(cp.side is None for cp in order_plan.contracts)  # a roll alone sends no outright order
    after = dict(positions)
    for sp in order_plan.spreads:
        for legs, code in ((sp.old_crosses, z.code), (sp.new_crosses, h.code)):
            for cross in legs:
                after[(cross.seller, code)] -= cross.quantity
                after[(cross.buyer, code)] += cross.quantity
        sign = -1 if sp.old_side == "SELL" else 1
        for holder, quantity in sp.shares:
            after[(holder, z.code)] += sign * quantity
            after[(holder, h.code)] -= sign * quantity
    assert len(order_plan.spreads) <= 1
    for holder, (in_z, in_h) in held.items():
        assert after[(holder, z.code)] == 0
        assert after[(holder, z.code)] + after[(holder, h.code)] == in_z + in_h
