"""A forced roll through the simulated IB gateway as a spread: the real ib_async client sends a
BAG order with two ComboLegs (the adapter qualifies the legs, never the combo), the gateway fills
it as one execution per leg with the combo's orderRef, and the ledger books them per strategy
(allocated back by old-contract position). The ledger balances, checks clean and reconciles clean
against the gateway. The gateway's snapshot is taken by the wall clock, so the test trades today:
the broker's own contract dates (stored as IB's contract details would be) make today the force
day of the current quarterly contract."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from support import sync_until_commissions_booked
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine import tables
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.futures.execute import record_roll_run
from tradeledger.engine.futures.state import old_and_new, overrides
from tradeledger.engine.futures.status import store_contract_details
from tradeledger.engine.setup.config import Limits, contract_of_code, current_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets import prices
from tradeledger.engine.trading.cycle import submit_run, wait_for_fills
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
ACCOUNT = "DU1234567"
CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"
ib_symbol = "MES"
trading_class = "MES"
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8
force_days = 2

[strategies.a]
instruments = { MES = 1 }

[strategies.b]
instruments = { MES = 1 }
"""


@pytest.fixture
def world(tmp_path):
    exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT, commission_per_contract=D("1.25"))
    exchange.deposit("USD", D(1_000_000))
    server = IBSimServer(exchange, poll_interval=0.02).start()
    env = init_environment(tmp_path / "home", "paper", "ib", ACCOUNT, ib_port=server.port, config_extra=CONFIG)
    session = Session(env)
    mes = session.config.instruments["MES"]
    today = dt.datetime.now(UTC).date()
    z = current_contract(mes, today)
    # IB says this contract's last trading day is the day after tomorrow: today is its force day
    store_contract_details(env, [{"instrument": "MES", "code": z.code,
                                  "last_trade_date": (today + dt.timedelta(days=2)).strftime("%Y%m%d")}])
    with read_connection(env.engine) as conn:
        old, new = old_and_new(mes, today, overrides(conn))
    assert old.code == z.code
    h = contract_of_code(mes, new.code)
    for k in (z, h):
        exchange.add_contract(k)
    yield session, exchange, z, h
    session.close()
    server.stop()
    exchange.close()


def _settle(session, exchange, close, by_code):
    env = session
    day = close.date()
    exchange.set_clock(close)
    for code, price in by_code.items():
        exchange.settle(code, price, day)
    text = "date,contract,settle\n" + "".join(f"{day.isoformat()},{c},{p}\n" for c, p in by_code.items())
    prices.store_rows(env, prices.parse_prices_csv(text, session.config, "USD", "test"), "test")
    mark_day(env, known_contracts(env.ledger), day, by_code, close)


def test_a_forced_roll_through_the_ib_gateway_is_one_spread(world):
    session, exchange, z, h = world
    env = session
    start = dt.datetime.now(UTC).replace(microsecond=0)
    t0, now, close = start - dt.timedelta(minutes=30), start - dt.timedelta(minutes=20), start - dt.timedelta(minutes=10)
    exchange.set_clock(t0)
    exchange.set_price(z.code, D(6000), t0)
    lines = [TargetLine("A", "MES", z, D(3), D(6000)), TargetLine("B", "MES", z, D(-1), D(6000))]
    record_plan(env, plan(1000, lines, {}, Limits(), {}), t0)
    send_planned(env, session.broker, 1000, t0)
    # until the order is filled (a deadline, not a number of syncs: under load 50 syncs in a
    # row could all run before the fill reached the client)
    wait_for_fills(session, 1000, timeout=10)
    _settle(session, exchange, t0 + dt.timedelta(minutes=1), {z.code: D(6000)})
    assert holder_positions(env.ledger, env.chart)[("A", z.code)] == D(3)

    exchange.set_clock(now)
    exchange.set_price(z.code, D(6012), now)
    exchange.set_price(h.code, D(6063), now)
    prices.store_rows(env, prices.parse_prices_csv(f"date,instrument,close\n{now.date()},MES,6060\n",
                                                   session.config, "USD", "t"), "t")
    run = record_roll_run(session, now.date(), now)
    execution = submit_run(session, run, now)
    [spread] = execution.plan.spreads
    assert (spread.quantity, dict(spread.shares)) == (D(2), {"A": D(2)})
    assert len(execution.submitted.sent) == 1
    wait_for_fills(session, run, timeout=10)
    # wait_for_fills returns once both legs are booked, which may be before their commission
    # reports reached the client; the sync after the reconnect below would then book those
    # commissions instead of replaying the legs (replays 1, not >= 2). The gateway sends the
    # combo's own report and the order's status before the commissions, so this also makes
    # the reads of ib_async's fills and trades below see them.
    sync_until_commissions_booked(session, session.broker)
    positions = {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}
    assert positions == {("A", h.code): D(3), ("B", h.code): D(-1)}
    with read_connection(env.engine) as conn:
        [order] = conn.execute(sa.select(tables.broker_order).where(tables.broker_order.c.run_id == run)).all()
        legs = conn.execute(sa.select(tables.fill.c.contract, tables.fill.c.side, tables.fill.c.price).where(
            tables.fill.c.order_id == order.id)).all()
    assert (order.contract, order.state) == (f"{z.code}/{h.code}", "filled")
    assert sorted((c, s, p) for c, s, p in legs) == sorted([(h.code, "BUY", 6063 * 10**9), (z.code, "SELL", 6012 * 10**9)])
    assert {p.contract.code: p.quantity for p in exchange.positions()} == {h.code: D(2)}
    # IB's extra report of the combination: one BAG execution (the combo's quantity and net price)
    # reaches the real client after the legs; the adapter drops it and books nothing twice
    ib = session.broker._ib
    bag = [f for f in ib.fills() if f.contract.secType == "BAG"]
    assert [(f.execution.orderRef, f.execution.side, f.execution.shares, f.execution.price) for f in bag] == [
        (order.order_ref, "BOT", 2.0, 51.0)]
    assert [t.filled() for t in ib.trades() if t.contract.secType == "BAG"] == [2.0]
    assert all(e.contract.sec_type != "BAG" for e in session.broker.executions(refresh=True))
    [status] = [o for o in session.broker.orders() if o.order_ref == order.order_ref]
    assert (status.quantity, status.filled) == (D(2), D(2))
    session.broker.close()  # a new connection: IB returns the day's fills, the combo's included
    session.broker.connect()
    assert [f.execution.orderRef for f in session.broker._ib.fills() if f.contract.secType == "BAG"] == [
        order.order_ref]
    again = sync_fills(env, session.broker)
    assert not again.booked and not again.failed and again.replays >= 2
    with read_connection(env.engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.fill).where(
            tables.fill.c.order_id == order.id)).scalar() == 2
    _settle(session, exchange, close, {h.code: D(6070)})
    export_beancount(env.ledger, env.ledger_path)
    assert check(env.ledger, env.ledger_path).ok
    result = reconcile_session(session)
    assert result.clean, (result.breaks, result.cash)


def test_a_roll_stopped_after_one_leg_at_ib_is_said_and_completed_once(world):
    """Through the real client: the gateway fills the spread's first leg (SELL 2 of the old
    contract) and cancels the rest. `roll execute` says so and exits 1 (the engine reports it:
    it ended in silence before); the interrupted_roll exception is raised once; the next roll
    run completes A's exposure by the missing leg alone (BUY 2 of the new contract), never the
    whole spread again, and the books reconcile with the gateway."""
    from tradeledger.engine.futures.execute import execute_rolls
    from tradeledger.engine.trust.exceptions import list_exceptions

    session, exchange, z, h = world
    env = session
    start = dt.datetime.now(UTC).replace(microsecond=0)
    t0, now = start - dt.timedelta(minutes=30), start - dt.timedelta(minutes=20)
    exchange.set_clock(t0)
    exchange.set_price(z.code, D(6000), t0)
    lines = [TargetLine("A", "MES", z, D(3), D(6000)), TargetLine("B", "MES", z, D(-1), D(6000))]
    record_plan(env, plan(1000, lines, {}, Limits(), {}), t0)
    send_planned(env, session.broker, 1000, t0)
    wait_for_fills(session, 1000, timeout=10)
    _settle(session, exchange, t0 + dt.timedelta(minutes=1), {z.code: D(6000)})
    exchange.set_clock(now)
    exchange.set_price(z.code, D(6012), now)
    exchange.set_price(h.code, D(6063), now)
    prices.store_rows(env, prices.parse_prices_csv(f"date,instrument,close\n{now.date()},MES,6060\n",
                                                   session.config, "USD", "t"), "t")
    exchange.fault_leg_only()
    result = execute_rolls(session, timeout=10)
    assert result["spreads"] == 1
    [said] = result["interrupted"]
    # the legs are said in the order of their codes: the new one first only for a December roll (H before Z)
    legs = ", ".join(f"{code} {qty} of 2" for code, qty in sorted({h.code: 0, z.code: 2}.items()))
    assert f"stopped with unequal legs: {legs}" in said, said
    positions = {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}
    assert positions == {("A", h.code): D(1), ("B", h.code): D(-1)}  # A's 2 sold, not bought back yet
    with read_connection(env.engine) as conn:
        raised = [e for e in list_exceptions(conn, "open") if e["kind"] == "interrupted_roll"]
    assert len(raised) == 1
    # A roll run rolls nothing more (every strategy is in the new contract): A's exposure is
    # completed by the next strategy run; here, the same targets planned once more
    lines = [TargetLine("A", "MES", h, D(3), D(6063)), TargetLine("B", "MES", h, D(-1), D(6063))]
    order_plan = plan(1001, lines, holder_positions(env.ledger, env.chart), Limits(), {})
    assert [(cp.contract.code, cp.side, cp.quantity) for cp in order_plan.contracts if cp.side] == [(h.code, "BUY", D(2))]
    record_plan(env, order_plan, now)
    send_planned(env, session.broker, 1001, now)
    wait_for_fills(session, 1001, timeout=10)
    sync_until_commissions_booked(session, session.broker)
    positions = {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}
    assert positions == {("A", h.code): D(3), ("B", h.code): D(-1)}
    assert {p.contract.code: p.quantity for p in exchange.positions()} == {h.code: D(2)}
    _settle(session, exchange, start - dt.timedelta(minutes=5), {h.code: D(6070)})
    result = reconcile_session(session)
    assert result.clean, (result.breaks, result.cash)
