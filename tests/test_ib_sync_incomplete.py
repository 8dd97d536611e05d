"""A start-up sync that does not complete fails the connect: nothing is traded on a partial picture.

ib_async's connect asks positions, open and completed orders, account values and executions, each
within the connect timeout; by default a request that times out is only logged and the connection
goes ahead. Then an order sent just before a crash -- done at IB, so only in the completed orders --
looks never sent, and `send_planned` would send it again. The adapter connects with
raiseSyncErrors, so such a connect (or reconnect) fails with BrokerDisconnected naming what timed
out. The gateway is the simulated one on a real socket, with its `withhold_answers` knob.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from test_ib_faults import ACCOUNT, Rig, the_order_ref
from tradeledger.broker.base import BrokerDisconnected
from tradeledger.broker.ib import IBBroker
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine import tables
from tradeledger.engine.ops.resilience import is_transient
from tradeledger.engine.trading.cycle import wait_for_fills
from tradeledger.ledger.db import read_connection

CRASHER = """
import sys, datetime as dt
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading.orders import send_planned

session = Session(open_environment(sys.argv[1], "paper"))
send_planned(session, session.broker, None, dt.datetime.now(dt.timezone.utc))
print("NOT KILLED", flush=True)
"""


def wait_until(predicate, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def gateway(tmp_path):
    exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT)
    server = IBSimServer(exchange, poll_interval=0.02).start()
    yield server
    server.stop()
    exchange.close()


def test_connect_fails_when_completed_orders_and_executions_are_not_answered(gateway):
    gateway.withhold_answers("completed orders", "executions")
    broker = IBBroker(port=gateway.port, client_id=7, account=ACCOUNT, timeout=0.5)
    try:
        with pytest.raises(BrokerDisconnected) as err:
            broker.connect()
        message = str(err.value)
        assert "start-up sync is incomplete" in message and "nothing sent" in message
        assert "completed orders request timed out" in message
        assert "executions request timed out" in message
        assert "\n" not in message
        assert is_transient(err.value)  # the daemon retries it, as a refused connection
        assert wait_until(lambda: not gateway.connected_clients())  # the socket is closed
        assert not broker.is_connected
        assert gateway.orders_received == 0 and gateway.exchange.orders() == []
    finally:
        broker.close()


def test_reconnect_waits_for_a_complete_sync(gateway):
    broker = IBBroker(port=gateway.port, client_id=7, account=ACCOUNT, timeout=0.5,
                      reconnect_wait=2.5, max_backoff=0.2)
    try:
        broker.connect()
        gateway.withhold_answers("completed orders")
        gateway.drop_connections()
        assert wait_until(lambda: not broker.is_connected)
        with pytest.raises(BrokerDisconnected):  # every reconnect meets an incomplete sync
            broker.orders()
        assert broker.reconnects == 0
        gateway.withhold_answers()
        assert broker.orders() == []  # the next attempt syncs fully
        assert broker.reconnects == 1
    finally:
        broker.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_order_placed_before_a_crash_is_not_sent_again_on_an_incomplete_sync(rig):
    run_id = rig.record({"Trend": 2})
    rig.session.close()  # the crashing process uses the environment's client id
    done = subprocess.run([sys.executable, "-c", CRASHER, str(rig.tmp / "home")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TRADELEDGER_KILL_AT": "placed"})
    assert done.returncode == -9, (done.stdout, done.stderr)  # killed before marking it sent
    assert wait_until(lambda: not rig.server.connected_clients())
    [order] = rig.exchange.orders()
    assert order.status == "Filled"  # only the completed orders show it
    rig.server.withhold_answers("completed orders")
    rig.session = rig.fresh_session()  # the restart, on a gateway slow to sync
    with pytest.raises(BrokerDisconnected, match="completed orders request timed out"):
        rig.submit(run_id)
    # Not sent again. (The simulated exchange would refuse an orderRef it remembers -- IB does
    # not -- so the count of placeOrder requests is the witness, not the exchange's orders.)
    assert rig.server.orders_received == 1 and len(rig.exchange.orders()) == 1
    with read_connection(rig.env.engine) as conn:
        assert conn.execute(sa.select(tables.broker_order.c.state)).scalar() == "planned"
    rig.server.withhold_answers()
    rig.session.close()
    rig.session = rig.fresh_session()
    report = rig.submit(run_id)  # a complete sync finds it by orderRef
    assert report.already_at_broker == [the_order_ref(rig)]
    wait_for_fills(rig.session, run_id, timeout=5)
    rig.assert_exactly_once(orders=1)
