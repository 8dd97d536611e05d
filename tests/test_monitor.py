"""Monitoring and the exceptions raised where they happen: each anomaly is raised once, with its
cause, and resolved when it clears."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from support import sim_world
from tradeledger.broker.base import Contract
from tradeledger.engine.setup.config import Limits, current_contract
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trust.monitor import Facts, Thresholds, check, findings
from tradeledger.engine.trading.orders import TargetLine, plan, record_plan, record_refusals, send_planned
from tradeledger.ledger.db import read_connection

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"

[instruments.FESX]
type = "future"
currency = "EUR"
multiplier = 10
expiry_months = "HMUZ"

[strategies.trend]
instruments = { MES = 1, FESX = 1 }

[limits]
max_order_qty = 3
"""


def facts(**changes) -> Facts:
    base = dict(now=T0, base_currency="USD", pending_commissions=(), open_orders=(), held=(),
                fx_known=frozenset(), price_dates={}, heartbeat=None)
    return Facts(**(base | changes))


def kinds(found):
    return sorted((f.kind, f.subject) for f in found)


def test_each_anomaly_is_found_past_its_threshold_and_not_before():
    limits = Thresholds(commission_overdue_minutes=60, order_stuck_minutes=30, stale_price_days=4,
                        daemon_silence_minutes=15)
    quiet = facts(pending_commissions=(("E1", "MESZ26", T0 - dt.timedelta(minutes=59)),),
                  open_orders=(("tl-paper-1", "MESZ26", "sent", T0 - dt.timedelta(minutes=29)),),
                  held=(("MESZ26", "USD"),), price_dates={"MESZ26": T0.date() - dt.timedelta(days=4)},
                  heartbeat=("running", T0 - dt.timedelta(minutes=14)))
    assert findings(quiet, limits) == []
    loud = facts(pending_commissions=(("E1", "MESZ26", T0 - dt.timedelta(minutes=61)),),
                 open_orders=(("tl-paper-1", "MESZ26", "sent", T0 - dt.timedelta(minutes=31)),),
                 held=(("MESZ26", "USD"), ("FESXZ26", "EUR")),
                 price_dates={"MESZ26": T0.date() - dt.timedelta(days=5), "FESXZ26": T0.date()},
                 heartbeat=("running", T0 - dt.timedelta(minutes=16)))
    assert kinds(findings(loud, limits)) == [
        ("commission_overdue", "E1"), ("missed_daemon_run", "daemon"), ("missing_fx", "EUR"),
        ("order_stuck", "tl-paper-1"), ("stale_prices", "MESZ26")]
    stopped = facts(heartbeat=("stopped", T0 - dt.timedelta(days=3)))
    assert findings(stopped, limits) == []  # a daemon stopped on purpose is not a missed run


def test_the_heartbeat_is_measured_by_the_database_clock_it_was_written_by():
    """On sim the environment's clock (the exchange's) may stand years from the database's; the daemon's
    heartbeat is stamped by the database's clock, so its silence is measured by it (read with the
    heartbeat), not by `now` (tests/test_heartbeat_clock.py: nor by the monitor's host's clock)."""
    limits = Thresholds(daemon_silence_minutes=15)
    db_now = T0 - dt.timedelta(days=900)  # the exchange's clock set far ahead of the database's
    fresh = facts(heartbeat=("running", db_now - dt.timedelta(minutes=1)), heartbeat_now=db_now)
    assert findings(fresh, limits) == []
    silent = facts(heartbeat=("running", db_now - dt.timedelta(minutes=16)), heartbeat_now=db_now)
    assert kinds(findings(silent, limits)) == [("missed_daemon_run", "daemon")]


@pytest.fixture
def world(tmp_path):
    env, session = sim_world(tmp_path / "home", CONFIG, T0,
                             lambda config: [(current_contract(config.instruments["MES"], T0.date()), D(5000))])
    exchange = session.exchange()
    mes = current_contract(session.config.instruments["MES"], T0.date())
    yield session, exchange, mes
    session.close()


def open_exceptions(session):
    with read_connection(session.engine) as conn:
        return {(e["kind"], e["subject"]): e for e in list_exceptions(conn, "open")}


def test_an_overdue_commission_is_raised_then_resolved_when_it_arrives(world):
    session, exchange, mes = world
    env = session
    exchange.fault_late_commission(n_polls=3)
    lines = [TargetLine("Trend", "MES", mes, D(2), D(5000))]
    record_plan(env, plan(1, lines, {}, Limits(), {}), T0)
    send_planned(env, session.broker, 1, T0)
    [key] = sync_fills(env, session.broker).pending_commissions
    assert ("commission_overdue", key) not in open_exceptions(session)
    check(session, T0 + dt.timedelta(hours=2))
    assert ("commission_overdue", key) in open_exceptions(session)
    check(session, T0 + dt.timedelta(hours=3))  # raised again: still one exception, counted
    assert len([k for k in open_exceptions(session) if k[0] == "commission_overdue"]) == 1
    for _ in range(3):
        sync_fills(env, session.broker)
    check(session, T0 + dt.timedelta(hours=4))
    assert ("commission_overdue", key) not in open_exceptions(session)


def test_a_rejected_order_and_a_limit_are_exceptions(world):
    session, exchange, mes = world
    env = session
    # No market price for FESX at the simulated exchange: the broker rejects the order.
    fesx = Contract("FESXZ26", "FUT", "FESX", "SMART", "EUR", D(10), "202612")
    exchange.add_contract(fesx)
    lines = [TargetLine("Trend", "FESX", fesx, D(1), D(4900))]
    record_plan(env, plan(7, lines, {}, Limits(), {}), T0)
    report = send_planned(env, session.broker, 7, T0)
    assert report.rejected and ("order_rejected", report.rejected[0][0]) in open_exceptions(session)
    # A run that wants more than max_order_qty (3) is refused before anything is sent.
    run_lines = [TargetLine("Trend", "MES", mes, D(5), D(5000))]
    order_plan = plan(8, run_lines, {}, session.config.limits, {})
    assert order_plan.refusals and "max_order_qty" in order_plan.refusals[0][1]
    record_refusals(env, order_plan, T0)
    assert ("limit_hit", mes.code) in open_exceptions(session)


def test_a_position_without_an_fx_rate_or_fresh_prices_is_flagged(world):
    session, exchange, _mes = world
    fesx = Contract("FESXZ26", "FUT", "FESX", "SMART", "EUR", D(10), "202612")
    exchange.add_contract(fesx)
    exchange.external_trade(fesx, D(1), D(4900))
    sync_fills(session, session.broker)
    found = check(session, T0)
    assert ("missing_fx", "EUR") in kinds(found) and ("stale_prices", "FESXZ26") in kinds(found)
