"""Expiry with no execution: the broker's position disappears at the final settlement price and
the ledger books each holder's last variation margin and the close, in one entry; without a final
settlement price nothing is booked and an exception names the contract and the row to import."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from tradeledger.engine.setup.config import Limits, contract_of_code
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets import prices
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

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
LAST = dt.date(2026, 12, 18)  # third Friday of December 2026: MESZ26's last trading day


@pytest.fixture
def world(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    exchange = session.exchange()
    z = contract_of_code(session.config.instruments["MES"], "MESZ26")
    t0 = dt.datetime(2026, 12, 1, 15, tzinfo=UTC)
    exchange.set_clock(t0)
    exchange.add_contract(z)
    exchange.set_price(z.code, D(6000))
    session.broker  # connect
    lines = [TargetLine("A", "MES", z, D(3), D(6000)), TargetLine("B", "MES", z, D(-1), D(6000))]
    order_plan = plan(1, lines, holder_positions(env.ledger, env.chart), Limits(), {})
    record_plan(env, order_plan, t0)
    send_planned(env, session.broker, 1, t0)
    sync_fills(env, session.broker)
    # the last ordinary settlement, on the day before the last trading day
    day = LAST - dt.timedelta(days=1)
    close = dt.datetime.combine(day, dt.time(21), tzinfo=UTC)
    exchange.set_clock(close)
    exchange.settle(z.code, D(6010), day)
    mark_day(env, known_contracts(env.ledger), day, {z.code: D(6010)}, close)
    yield session, exchange, z
    session.close()


def _settlement_row(session, day, code, price):
    parsed = prices.parse_prices_csv(f"date,contract,settle\n{day.isoformat()},{code},{price}\n", session.config,
                                     "USD", "test")
    prices.store_rows(session, parsed, "test")


def _ledger_income(env):
    balances = env.ledger.balances()
    return {acct: units for (acct, ccy), units in balances.items() if acct.startswith("Income:Trading") and ccy == "USD"}


def test_an_expiry_with_no_execution_is_a_final_settlement(world):
    session, exchange, z = world
    env = session
    # the exchange expires MESZ26 at the final settlement price 6,020: the position disappears
    exchange.set_clock(dt.datetime(2026, 12, 19, 1, tzinfo=UTC))
    exchange.expire(z.code, D(6020), LAST)
    assert all(p.contract.code != z.code for p in exchange.positions())
    _settlement_row(session, LAST, z.code, "6020")
    result = reconcile_session(session)
    assert result.clean, result.breaks
    positions = holder_positions(env.ledger, env.chart)
    assert not any(units for (_h, code), units in positions.items() if code == z.code)
    # A: +3 from 6,010 to 6,020 = +150.00 on top of its earlier VM; B: -1 x 10 x 5 = -50.00
    income = _ledger_income(env)
    assert income["Income:Trading:A"] == D("-300.00")  # 3 x (6020 - 6000) x 5, as income (credit)
    assert income["Income:Trading:B"] == D("100.00")  # -1 x (6020 - 6000) x 5
    export_beancount(env.ledger, env.ledger_path)
    assert check(env.ledger, env.ledger_path).ok
    # a second reconciliation books nothing again
    before = env.ledger.count()
    assert reconcile_session(session).clean
    assert env.ledger.count() == before
    with read_connection(env.engine) as conn:
        kinds = {e["kind"] for e in list_exceptions(conn, "open")}
    assert "missing_final_settlement" not in kinds


def test_a_missing_final_settlement_price_is_an_exception_naming_the_contract(world):
    session, exchange, z = world
    env = session
    exchange.set_clock(dt.datetime(2026, 12, 19, 1, tzinfo=UTC))
    exchange.expire(z.code, D(6020), LAST)
    result = reconcile_session(session)
    assert not result.clean  # the ledger still holds what the broker no longer has
    with read_connection(env.engine) as conn:
        [exc] = [e for e in list_exceptions(conn, "open") if e["kind"] == "missing_final_settlement"]
    assert "MESZ26" in exc["detail"] and "2026-12-18,MESZ26,PRICE" in exc["detail"]
    # the price arrives: the next reconciliation books the expiry and resolves the exception
    _settlement_row(session, LAST, z.code, "6020")
    assert reconcile_session(session).clean
    with read_connection(env.engine) as conn:
        assert not [e for e in list_exceptions(conn, "open") if e["kind"] == "missing_final_settlement"]


def test_an_expiry_reconciled_on_its_last_trading_day_after_the_final_settlement(world):
    """Found by tests/test_across_runs.py: the exchange settles MESZ26 at the close of its last
    trading day and the position disappears; a reconciliation that evening (the daemon's, or
    `reconcile` after `sim settle`) found the ledger still holding it, raised an error break and
    locked MES until midnight, when the contract's last trading day had "passed". The final
    settlement is in, the broker no longer holds it: it has expired, and is booked at once. Before
    the settlement price arrives the same evening nothing is booked and no price is asked for."""
    session, exchange, z = world
    env = session
    close = dt.datetime.combine(LAST, dt.time(21), tzinfo=UTC)
    exchange.set_clock(close)
    exchange.expire(z.code, D(6020), LAST)
    early = reconcile_session(session)  # the broker's position has gone, the price is not in yet
    assert not early.clean
    with read_connection(env.engine) as conn:
        assert not [e for e in list_exceptions(conn, "open") if e["kind"] == "missing_final_settlement"]
    _settlement_row(session, LAST, z.code, "6020")
    result = reconcile_session(session)
    assert result.clean, result.breaks
    assert not any(units for (_h, code), units in holder_positions(env.ledger, env.chart).items() if code == z.code)
    income = _ledger_income(env)
    assert income["Income:Trading:A"] == D("-300.00") and income["Income:Trading:B"] == D("100.00")
    with read_connection(env.engine) as conn:
        assert not [e for e in list_exceptions(conn, "open") if e["kind"] == "reconciliation_break"]
    export_beancount(env.ledger, env.ledger_path)
    assert check(env.ledger, env.ledger_path).ok
