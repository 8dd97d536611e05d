"""P&L that adds up: for every period and grouping, the days sum to the period's total to the cent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeledger.engine.accounting.valuation import nav
from tradeledger.engine.setup.demo import demo_days, run_demo
from tradeledger.reports import pnl as pnl_mod
from tradeledger.reports import series as series_mod

DAYS = demo_days(5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    session = run_demo(tmp_path_factory.mktemp("pnl") / "home", days=5)
    yield session
    session.close()


def _net(session, by, since, until) -> dict:
    result = pnl_mod.pnl(session, by, since, until)
    return {row[by]: row["net"] for row in result["rows"]}


def test_daily_pnl_includes_the_change_in_unrealized(demo):
    days = pnl_mod.pnl(demo, "day")["rows"]
    total = pnl_mod.pnl(demo, "strategy")["rows"]
    assert [r["day"] for r in days] == DAYS
    assert any(r["unrealized"] != 0 for r in days)  # shares move between closes
    day_sum = sum(r["net"] for r in days)
    strategy_sum = sum(r["net"] for r in total)
    assert abs(day_sum - strategy_sum) <= D("0.01") * len(total)  # each group rounds once
    for row in days:
        assert row["net"] == row["realized"] + row["unrealized"] + row["income"] - row["commissions"]


def test_the_last_days_unrealized_is_the_positions_unrealized(demo):
    by_strategy = pnl_mod.pnl(demo, "strategy")["rows"]
    positions = pnl_mod.positions(demo)
    for row in by_strategy:
        for native in row["native"]:
            held = sum((p["unrealized"] for p in positions
                        if p["strategy"] == row["strategy"] and p["currency"] == native["currency"]), D(0))
            assert native["unrealized"] == held, (row["strategy"], native)


def test_cumulative_is_the_running_sum(demo):
    rows = pnl_mod.pnl(demo, "day", cumulative=True)["rows"]
    running = D(0)
    for row in rows:
        running += row["net"]
        assert row["cumulative"] == running


def test_nav_is_deposits_plus_everything_earned(demo):
    built = series_mod.build(demo, "total")
    last = built.days[-1]
    now = nav(demo, demo.config)
    assert series_mod.cents(built.nav[last]) == now.total
    assert built.deposits[last] == D(2000000)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.sampled_from(DAYS + [DAYS[-1] + dt.timedelta(days=1)]), min_size=2, max_size=4, unique=True),
       by=st.sampled_from(["strategy", "instrument"]))
def test_any_split_of_a_period_adds_up_to_the_cent(demo, cuts, by):
    cuts = sorted(cuts)
    whole = _net(demo, by, cuts[0], cuts[-1])
    parts: dict = {}
    for since, until in zip(cuts, cuts[1:]):
        for key, net in _net(demo, by, since, until).items():
            parts[key] = parts.get(key, D(0)) + net
    days: dict = {}
    day = cuts[0]
    while day < cuts[-1]:
        for key, net in _net(demo, by, day, day + dt.timedelta(days=1)).items():
            days[key] = days.get(key, D(0)) + net
        day += dt.timedelta(days=1)
    keys = set(whole) | set(parts) | set(days)
    for key in keys:
        assert parts.get(key, D(0)) == whole.get(key, D(0)) == days.get(key, D(0)), key


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_pure_series_days_sum_to_the_total(data):
    """Random trades in a share and a future, random closes and FX: Σ daily net == total net."""
    base = dt.date(2026, 1, 5)
    days = [base + dt.timedelta(days=i) for i in range(data.draw(st.integers(2, 8)))]
    share = series_mod.ContractInfo("SPY", "USD", D(1), False, "SPY")
    future = series_mod.ContractInfo("FESXZ26", "EUR", D(10), True, "FESX")
    price = st.decimals(min_value=D(50), max_value=D(150), places=2)
    closes = {"SPY": {d: data.draw(price) for d in days}, "FESX": {d: data.draw(price) for d in days}}
    fx = {"EUR": {d: data.draw(st.decimals(min_value=D("0.9"), max_value=D("1.3"), places=4)) for d in days}}
    moves, qty, mark, entry = [], {"SPY": D(0), "FESXZ26": D(0)}, None, 0
    for d in days:
        for _ in range(data.draw(st.integers(0, 2))):
            entry += 1
            q = D(data.draw(st.integers(-3, 3)))
            p = data.draw(price)
            if data.draw(st.booleans()):
                moves.append(series_mod.Move(d, "position", "a", "SPY", q, basis=q * p, entry=entry))
            else:
                if mark is not None and qty["FESXZ26"]:
                    moves.append(series_mod.Move(d, "realized", "a", "EUR", qty["FESXZ26"] * (p - mark) * 10,
                                                 contract="FESXZ26", price=p, entry=entry))
                moves.append(series_mod.Move(d, "position", "a", "FESXZ26", q, price=p, entry=entry))
                qty["FESXZ26"] += q
                mark = p
    prices = series_mod._Prices({}, closes, fx)
    result = series_mod.compute(moves, {"SPY": share, "FESXZ26": future}, prices, "USD", days, "strategy")
    if "a" not in result.groups:
        return
    rows = pnl_mod._period_rows(result.groups["a"], None, None, per_day=True)
    total = pnl_mod._period_rows(result.groups["a"], None, None, per_day=False)[0][1]
    assert sum(r["net"] for _, r in rows) == total["net"]
    # the total is realized + unrealized at the end, each day's at its own rate
    exact = sum(d.base_realized - d.base_commissions for d in result.groups["a"].values())
    last = result.groups["a"][max(result.groups["a"])]
    assert total["net"] == series_mod.cents(exact + last.base_unrealized)
