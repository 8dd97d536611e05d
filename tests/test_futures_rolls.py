"""Rolls through the engine on the simulated broker: the netted roll of EXAMPLES.md to the cent
(two strategies, one spread at the broker, allocated back), a forced roll by `roll execute`, an
interrupted roll completed by the next run, and a passive roll over several runs. After each:
the ledger balances, beancount's check is clean, reconciliation is clean."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.futures.execute import execute_rolls
from tradeledger.engine.futures.rolls import FORCE, InstrumentRoll
from tradeledger.engine.futures.status import roll_status, set_roll_state
from tradeledger.engine.setup.config import Limits, contract_of_code
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets import prices
from tradeledger.engine.trading.cycle import plan_run, submit_run, wait_for_fills
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.engine.futures.exposure import instrument_index
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount
from tradeledger.ledger.store import fmt_ts

UTC = dt.timezone.utc
CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8
force_days = 2

[strategies.a]
instruments = { MES = 1 }

[strategies.b]
instruments = { MES = 1 }

[sim]
commission_per_contract = "0"
"""
DAY0 = dt.datetime(2026, 12, 1, 15, tzinfo=UTC)


@pytest.fixture
def world(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    exchange = session.exchange()
    mes = session.config.instruments["MES"]
    z, h = contract_of_code(mes, "MESZ26"), contract_of_code(mes, "MESH27")
    exchange.set_clock(DAY0)
    for k in (z, h):
        exchange.add_contract(k)
    exchange.set_price(z.code, D(6000))
    session.broker  # connect
    # A +3, B -1 in Z (one crossed, BUY 2 at the broker), all marked at the settlement 6,000
    lines = [TargetLine("A", "MES", z, D(3), D(6000)), TargetLine("B", "MES", z, D(-1), D(6000))]
    record_plan(env, plan(1000, lines, {}, Limits(), {}), DAY0)
    send_planned(env, session.broker, 1000, DAY0)
    sync_fills(env, session.broker)
    _settle(session, DAY0.date(), {z.code: D(6000)})
    yield session, exchange, z, h
    session.close()


def _settle(session, day, by_code):
    env, exchange = session, session.exchange()
    close = dt.datetime.combine(day, dt.time(21), tzinfo=UTC)
    exchange.set_clock(close)
    for code, price in by_code.items():
        exchange.settle(code, price, day)
    text = "date,contract,settle\n" + "".join(f"{day.isoformat()},{c},{p}\n" for c, p in by_code.items())
    prices.store_rows(env, prices.parse_prices_csv(text, session.config, "USD", "test"), "test")
    mark_day(env, known_contracts(env.ledger), day, by_code, close)


def _usd(env):
    return {acct: units for (acct, ccy), units in env.ledger.balances().items() if ccy == "USD"}


def _clean(session):
    env = session
    export_beancount(env.ledger, env.ledger_path)
    assert check(env.ledger, env.ledger_path).ok
    result = reconcile_session(session)
    assert result.clean, (result.breaks, result.cash)


def _positions(env):
    return {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}


def test_the_netted_roll_of_the_examples_to_the_cent(world):
    session, exchange, z, h = world
    env = session
    before = _usd(env)
    cash = env.chart.cash
    day = dt.date(2026, 12, 16)
    now = dt.datetime.combine(day, dt.time(15), tzinfo=UTC)
    exchange.set_clock(now)
    exchange.set_commission(D("1.25"))
    roll = InstrumentRoll("MES", FORCE, "user", z, h, {z.code: D(6010), h.code: D(6060)})
    lines = [TargetLine("A", "MES", h, D(3), D(6060)), TargetLine("B", "MES", h, D(-1), D(6060))]
    order_plan = plan(1001, lines, holder_positions(env.ledger, env.chart), Limits(), {},
                      instrument_of=instrument_index(session.config), rolls={"MES": roll})
    [sp] = order_plan.spreads
    assert all(cp.side is None for cp in order_plan.contracts)  # nothing outright: exposure unchanged
    assert (sp.old_side, sp.quantity, dict(sp.shares)) == ("SELL", D(2), {"A": D(2)})
    assert [(c.seller, c.buyer, c.quantity) for c in sp.old_crosses] == [("A", "B", D(1))]
    assert [(c.seller, c.buyer, c.quantity) for c in sp.new_crosses] == [("B", "A", D(1))]
    record_plan(env, order_plan, now)
    exchange.set_price(z.code, D(6012), now)
    exchange.set_price(h.code, D(6063), now)
    sent = send_planned(env, session.broker, 1001, now)
    assert len(sent.sent) == 1  # one spread for the account
    report = sync_fills(env, session.broker)
    assert len(report.booked) == 2  # its two leg executions
    _settle(session, day, {h.code: D(6070)})
    after = _usd(env)
    delta = {k: after.get(k, D(0)) - before.get(k, D(0)) for k in set(after) | set(before)}
    assert delta["Income:Trading:A"] == D("-290.00")
    assert delta["Income:Trading:B"] == D("100.00")
    assert delta["Expenses:Commissions:A"] == D("5.00")
    assert delta.get("Expenses:Commissions:B", D(0)) == 0
    assert delta[cash] == D("185.00")
    assert _positions(env) == {("A", "MESH27"): D(3), ("B", "MESH27"): D(-1)}
    assert {p.contract.code: p.quantity for p in exchange.positions()} == {"MESH27": D(2)}
    with read_connection(env.engine) as conn:
        [order] = conn.execute(sa.select(tables.broker_order).where(tables.broker_order.c.run_id == 1001)).all()
    assert (order.contract, order.state) == ("MESZ26/MESH27", "filled")
    _clean(session)


def test_roll_execute_moves_both_strategies_by_one_spread(world):
    session, exchange, z, h = world
    env = session
    now = dt.datetime(2026, 12, 16, 15, tzinfo=UTC)  # force_from of MESZ26 (deadline 18th - 2)
    exchange.set_clock(now)
    exchange.set_price(z.code, D(6010), now)
    exchange.set_price(h.code, D(6060), now)
    prices.store_rows(env, prices.parse_prices_csv("date,instrument,close\n2026-12-15,MES,6060\n", session.config,
                                                   "USD", "t"), "t")
    [status] = roll_status(env, now.date())
    assert (status.state, status.source, status.old, status.new) == ("force", "calendar", "MESZ26", "MESH27")
    result = execute_rolls(session, timeout=5)
    assert (result["spreads"], result["outright"]) == (1, 0)
    assert _positions(env) == {("A", "MESH27"): D(3), ("B", "MESH27"): D(-1)}
    _settle(session, now.date(), {h.code: D(6070)})
    _clean(session)


def test_roll_execute_never_supersedes_a_run_under_review(world):
    """A roll run would be newer than a strategy run waiting for review and so supersede it: the
    reviewer's run could no longer be executed. roll execute refuses, naming the run; once that
    run is rejected, the roll goes ahead."""
    from tradeledger.engine.targets.runs import TargetError, reject_run, show_run

    session, exchange, z, h = world
    env = session
    now = dt.datetime(2026, 12, 16, 15, tzinfo=UTC)
    exchange.set_clock(now)
    exchange.set_price(z.code, D(6010), now)
    exchange.set_price(h.code, D(6060), now)
    prices.store_rows(env, prices.parse_prices_csv("date,instrument,close\n2026-12-15,MES,6060\n", session.config,
                                                   "USD", "t"), "t")
    with env.engine.begin() as conn:
        pending = conn.execute(tables.target_run.insert().values(
            created_at=fmt_ts(now), as_of=now.date().isoformat(), state="pending", inputs="{}")).inserted_primary_key[0]
    with pytest.raises(TargetError, match=f"run {pending} is pending review"):
        execute_rolls(session, timeout=5)
    assert show_run(env, pending, now).status == "pending"  # still the newest run: it can be approved
    assert _positions(env) == {("A", "MESZ26"): D(3), ("B", "MESZ26"): D(-1)}
    reject_run(env, pending, "test", "not today", now)
    assert execute_rolls(session, timeout=5)["spreads"] == 1
    assert _positions(env) == {("A", "MESH27"): D(3), ("B", "MESH27"): D(-1)}


def test_an_interrupted_roll_is_raised_and_the_next_run_completes_it_once(world):
    session, exchange, z, h = world
    env = session
    now = dt.datetime(2026, 12, 16, 15, tzinfo=UTC)
    exchange.set_clock(now)
    exchange.set_price(z.code, D(6010), now)
    exchange.set_price(h.code, D(6060), now)
    prices.store_rows(env, prices.parse_prices_csv("date,instrument,close\n2026-12-15,MES,6060\n", session.config,
                                                   "USD", "t"), "t")
    exchange.fault_leg_only()  # the broker sells Z and cancels the H leg
    execute_rolls(session, timeout=5)
    # the crosses moved B's short and 1 of A's long on both legs; the broker sold A's other 2 Z only
    assert _positions(env) == {("A", "MESH27"): D(1), ("B", "MESH27"): D(-1)}
    with read_connection(env.engine) as conn:
        [exc] = [e for e in list_exceptions(conn, "open") if e["kind"] == "interrupted_roll"]
    assert "MESZ26 2" in exc["detail"] and "MESH27 0" in exc["detail"]
    # A's exposure fell from 3 to 1 by the half roll; its target is still 3: the next run buys the
    # missing 2 in H once (no second spread), and B is untouched
    now2 = now + dt.timedelta(minutes=5)
    exchange.set_clock(now2)
    run = _approved_run(session, now2, {"A": 3, "B": -1})
    order_plan = submit_run(session, run, now2).plan
    assert not order_plan.spreads
    assert [(cp.contract.code, cp.side, cp.quantity) for cp in order_plan.contracts if cp.side] == \
        [("MESH27", "BUY", D(2))]
    wait_for_fills(session, run, timeout=5)
    assert _positions(env) == {("A", "MESH27"): D(3), ("B", "MESH27"): D(-1)}
    _settle(session, now2.date(), {h.code: D(6070)})
    _clean(session)


def test_a_passive_roll_over_several_runs(world):
    session, exchange, z, h = world
    env = session
    set_roll_state(env, "MES", "passive", "test")
    # run 1: A cuts to 1 (sells 2 of its Z), B goes from -1 to -2 (sells 1 of H)
    now = dt.datetime(2026, 12, 11, 15, tzinfo=UTC)
    for code in (z.code, h.code):
        exchange.set_price(code, D(6000), now)
    exchange.set_clock(now)
    run = _approved_run(session, now, {"A": 1, "B": -2})
    submit_run(session, run, now)
    wait_for_fills(session, run, timeout=5)
    assert _positions(env) == {("A", "MESZ26"): D(1), ("B", "MESZ26"): D(-1), ("B", "MESH27"): D(-1)}
    # run 2: A goes to 2 (buys 1 of H), B back to 0 (buys back its Z first, then its H)
    now = now + dt.timedelta(days=1)
    exchange.set_clock(now)
    run = _approved_run(session, now, {"A": 2, "B": 0})
    submit_run(session, run, now)
    wait_for_fills(session, run, timeout=5)
    assert _positions(env) == {("A", "MESZ26"): D(1), ("A", "MESH27"): D(1)}
    # the calendar's force day moves what is left by spread
    set_roll_state(env, "MES", "auto", "test")
    now = dt.datetime(2026, 12, 16, 15, tzinfo=UTC)
    exchange.set_clock(now)
    run = _approved_run(session, now, {"A": 2, "B": 0})
    order_plan = submit_run(session, run, now).plan
    assert [sp.quantity for sp in order_plan.spreads] == [D(1)]
    wait_for_fills(session, run, timeout=5)
    assert _positions(env) == {("A", "MESH27"): D(2)}
    _settle(session, now.date(), {h.code: D(6000)})
    _clean(session)


def _approved_run(session, now, targets):
    """An approved run with these targets on the current contract (as a reviewed run would be)."""
    import json

    env = session
    with env.engine.begin() as conn:
        run_id = conn.execute(tables.target_run.insert().values(
            created_at=fmt_ts(now), as_of=now.date().isoformat(), state="approved",
            reviewed_by="test", inputs="{}")).inserted_primary_key[0]
        h = contract_of_code(session.config.instruments["MES"], "MESH27")
        for holder, target in targets.items():
            explain = {"account": holder, "execution_instrument": "MES", "price": "6000", "fx_rate": "1"}
            conn.execute(tables.target_line.insert().values(
                run_id=run_id, strategy=holder.lower(), instrument="MES", contract=h.code, current=0,
                target=int(D(target) * 10**9), explain=json.dumps(explain)))
    return run_id

