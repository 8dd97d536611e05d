"""Faults on the IB path, through the engine: an environment whose broker is `ib`, pointed at the
simulated gateway (IBSimServer over a SimExchange file) on a real socket, the real ib_async client.

The instrument is CME bitcoin as IB names it (symbol BRR, trading class BTC, local symbol BTCZ6)
and tradeledger names it (BTCZ26). Each test ends with the same checks (`assert_exactly_once`):
every execution at the exchange is booked exactly once with its commission, the exchange holds
no order twice, the ledger's positions equal the broker's, beancount agrees, and reconciliation
is clean (when engine/reconcile.py is there).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from support import sync_until_commissions_booked
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine import tables
from tradeledger.engine.setup.config import Limits, current_contract
from tradeledger.engine.trading.cycle import wait_for_fills
from tradeledger.engine.setup.environment import init_environment, open_environment
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.setup.session import Session
from tradeledger.broker.base import BrokerDisconnected
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount
from tradeledger.ledger.numbers import from_scaled

ACCOUNT = "DU1234567"
UTC = dt.timezone.utc
CONFIG = """
[instruments.BTC]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"
ib_symbol = "BRR"
trading_class = "BTC"

[strategies.trend]
instruments = { BTC = 1 }
"""


class Rig:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT)
        self.server = IBSimServer(self.exchange, poll_interval=0.02).start()
        self.port = self.server.port
        init_environment(tmp_path / "home", "paper", "ib", ACCOUNT, ib_port=self.port,
                         config_extra=CONFIG)
        self.session = self.fresh_session()
        self.contract = current_contract(self.session.config.instruments["BTC"],
                                         dt.datetime.now(UTC).date())
        self.exchange.add_contract(self.contract)
        self.exchange.set_price(self.contract.code, D(90000))
        self.run = 0

    def fresh_session(self) -> Session:
        return Session(open_environment(self.tmp / "home", "paper"))

    @property
    def env(self):
        return self.session

    def record(self, targets: dict, price=90000) -> int:
        self.run += 1
        lines = [TargetLine(h, "BTC", self.contract, D(t), D(price)) for h, t in targets.items()]
        order_plan = plan(self.run, lines, holder_positions(self.env.ledger, self.env.chart), Limits(), {})
        record_plan(self.env, order_plan,
                    dt.datetime.now(UTC))
        return self.run

    def submit(self, run_id: int):
        return send_planned(self.env, self.session.broker, run_id, dt.datetime.now(UTC))

    def sync(self):
        return sync_fills(self.env, self.session.broker)

    def restart_gateway(self) -> None:
        self.server = IBSimServer(self.exchange, port=self.port, poll_interval=0.02).start()

    def close(self) -> None:
        self.session.close()
        self.server.stop()
        self.exchange.close()

    def assert_exactly_once(self, orders: int) -> None:
        # The fills are booked (wait_for_fills), but a commission report can reach the client
        # after the sync that booked its fill: wait for those, booking nothing else.
        sync_until_commissions_booked(self.env, self.session.broker)
        assert len(self.exchange.orders()) == orders  # nothing sent twice
        broker = {e.base_exec_id: e for e in self.exchange.executions()}
        with read_connection(self.env.engine) as conn:
            rows = conn.execute(sa.select(tables.fill).where(tables.fill.c.superseded_by.is_(None))).all()
            states = [r.state for r in conn.execute(sa.select(tables.broker_order))]
        assert sorted(r.exec_key for r in rows) == sorted(broker)  # each booked exactly once
        for r in rows:
            assert r.commission is not None and from_scaled(r.commission) == broker[r.exec_key].commission
        assert set(states) <= {"filled"}
        ledger = sum(holder_positions(self.env.ledger, self.env.chart).values(), D(0))
        assert ledger == sum((p.quantity for p in self.exchange.positions()), D(0))
        commissions = sum((v for (a, _), v in self.env.ledger.income().items()
                           if a.startswith("Expenses:Commissions")), D(0))
        assert commissions == sum((e.commission for e in broker.values()), D(0))
        path = self.tmp / "ledger.beancount"
        export_beancount(self.env.ledger, path)
        assert check(self.env.ledger, path).ok
        try:
            from tradeledger.engine.trust.reconcile import reconcile_session
        except ImportError:
            return
        result = reconcile_session(self.session, "test")
        assert result.clean, (result.breaks, result.cash)


def the_order_ref(rig) -> str:
    """The orderRef of the rig's one order (recorded with it when planned)."""
    with read_connection(rig.env.engine) as conn:
        [ref] = conn.execute(sa.select(tables.broker_order.c.order_ref)).scalars().all()
    return ref


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_executions_come_back_under_tradeledgers_contract_code(rig):
    rig.submit(rig.record({"Trend": 2}))
    wait_for_fills(rig.session, rig.run, timeout=5)
    # A fresh process knows no conId yet: the contract is named from IB's fields.
    rig.session.close()
    rig.session = rig.fresh_session()
    (ex,) = rig.session.broker.executions()
    assert ex.contract.code == rig.contract.code and ex.contract.code.startswith("BTC")
    assert ex.contract.symbol == "BRR" and ex.contract.trading_class == "BTC"
    assert ex.contract.multiplier == 5 and ex.contract.con_id
    rig.assert_exactly_once(orders=1)


def test_connection_dropped_mid_order(rig):
    run_id = rig.record({"Trend": 3})
    rig.server.drop_after_next_order()
    with pytest.raises(BrokerDisconnected):
        rig.submit(run_id)  # the order reached the gateway; its answer was lost
    with read_connection(rig.env.engine) as conn:
        assert conn.execute(sa.select(tables.broker_order.c.state)).scalar() == "planned"
    report = rig.submit(run_id)  # after the reconnect: found by orderRef, not sent again
    assert report.already_at_broker == [the_order_ref(rig)]
    assert len(rig.exchange.orders()) == 1
    wait_for_fills(rig.session, run_id, timeout=5)
    rig.assert_exactly_once(orders=1)


def test_connection_dropped_during_a_fill(rig):
    run_id = rig.record({"Trend": 3})
    rig.exchange.fault_partial_fill(qty=D(1))  # 1 fills now, 2 rest
    rig.submit(run_id)
    first = rig.sync()
    deadline = time.monotonic() + 5
    while not first.booked and time.monotonic() < deadline:
        time.sleep(0.02)
        first = rig.sync()
    assert len(first.booked) == 1
    rig.server.stop()  # the gateway goes away while the rest of the order fills
    rig.exchange.set_price(rig.contract.code, D(91000))
    rig.exchange.release_order(the_order_ref(rig))  # 2 @ 91000
    rig.restart_gateway()
    wait_for_fills(rig.session, run_id, timeout=5)  # reconnect, reqExecutions, book
    assert rig.session.broker.reconnects >= 1
    assert holder_positions(rig.env.ledger, rig.env.chart) == {("Trend", rig.contract.code): D(3)}
    # VM: the first contract marked 90000 -> 91000 at the second fill: 1 x 1000 x 5 = 5000
    assert rig.env.ledger.income()[("Income:Trading:Trend", "USD")] == D(-5000)
    rig.assert_exactly_once(orders=1)


def test_connection_dropped_before_the_commission_report(rig):
    rig.server.hold_commissions()
    run_id = rig.record({"Trend": 4})
    rig.submit(run_id)
    report = wait_for_fills(rig.session, run_id, timeout=5)
    assert len(report.booked) == 1 and len(report.pending_commissions) == 1
    rig.server.drop_connections()
    rig.server.release_commissions()  # known at the gateway; our socket is down
    deadline = time.monotonic() + 5
    arrived = []
    while not arrived and time.monotonic() < deadline:
        arrived = rig.sync().commissions  # the reconnect's reqExecutions replays the report
        time.sleep(0.05)
    assert arrived == report.booked
    again = rig.sync()
    assert again.commissions == [] and again.booked == [] and again.pending_commissions == []
    assert rig.env.ledger.income()[("Expenses:Commissions:Trend", "USD")] == D("4.00")
    rig.assert_exactly_once(orders=1)


CRASHING_SUBMIT = """
import sys, time
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.trading.orders import send_planned
from tradeledger.engine.setup.session import Session

session = Session(open_environment(sys.argv[1], "paper"))
broker = session.broker
original = broker.place_order

def place_then_report(request):  # the real order, then a line the test waits for
    status = original(request)
    print("placed", request.order_ref, flush=True)
    time.sleep(60)  # killed here: before the order's state is written
    return status

broker.place_order = place_then_report
import datetime as dt
send_planned(session, broker, None, dt.datetime.now(dt.timezone.utc))
"""


def test_process_killed_after_placing_an_order(rig):
    run_id = rig.record({"Trend": 5})
    rig.session.close()  # the crashing process uses the environment's client id
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_SUBMIT, str(rig.tmp / "home")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("placed tl-paper-"), proc.stderr.read() if not line else line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    deadline = time.monotonic() + 3
    while rig.server.connected_clients() and time.monotonic() < deadline:
        time.sleep(0.02)
    rig.session = rig.fresh_session()  # the restart
    with read_connection(rig.env.engine) as conn:
        assert conn.execute(sa.select(tables.broker_order.c.state)).scalar() == "planned"
    report = rig.submit(run_id)
    assert report.already_at_broker == [the_order_ref(rig)]
    assert len(rig.exchange.orders()) == 1
    wait_for_fills(rig.session, run_id, timeout=5)
    rig.assert_exactly_once(orders=1)
