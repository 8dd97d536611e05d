"""The broker's day window on the IB path: the simulated gateway (ibsim, over a SimExchange that
forgets like IB at midnight New York) and the unmodified ib_async client.

A process places an order through IBBroker and is SIGKILLed before it records `sent`; the order
fills. After the gateway's midnight, reqExecutions and the open/completed orders no longer carry
it. The rerun sends nothing: the order is of unknown outcome. When the broker reports it again (its
memory is switched off here, as a gateway configured in the wrong zone would show it), it is
recorded as sent and its fill booked once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from test_ib_faults import CRASHING_SUBMIT, Rig
from tradeledger.broker.base import day_start
from tradeledger.engine import tables
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.inflight import settle_older_orders
from tradeledger.engine.trading.orders import holder_positions, send_planned
from tradeledger.ledger.db import read_connection

UTC = dt.timezone.utc
NY = "America/New_York"


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def kill_after_place(rig) -> None:
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


def states(rig) -> list[str]:
    with read_connection(rig.env.engine) as conn:
        return [r.state for r in conn.execute(sa.select(tables.broker_order))]


def test_an_order_ib_forgot_overnight_is_not_sent_again(rig):
    rig.exchange.set_day_window(NY)
    run_id = rig.record({"Trend": 5})
    kill_after_place(rig)
    assert [o.filled for o in rig.exchange.orders()] == [5]  # it reached the gateway and filled
    now = rig.exchange.now()
    next_morning = day_start(now + dt.timedelta(days=1), NY) + dt.timedelta(hours=1)
    rig.exchange.set_clock(next_morning)

    rig.session = rig.fresh_session()  # the rerun, the next broker day
    broker = rig.session.broker
    assert broker.orders() == [] and broker.executions(refresh=True) == []  # IB no longer knows it
    report = send_planned(rig.env, broker, run_id, next_morning)
    assert report.sent == [] and len(report.unknown) == 1
    assert states(rig) == ["unknown"]
    rig.exchange.set_day_window(None)
    assert len(rig.exchange.orders()) == 1  # not placed twice
    rig.exchange.set_day_window(NY)
    assert sync_fills(rig.env, broker).booked == [] and holder_positions(rig.env.ledger, rig.env.chart) == {}

    # Found again (the gateway reports it): recorded as sent, its one fill booked once.
    rig.exchange.set_day_window(None)
    rig.session.close()
    rig.session = rig.fresh_session()
    settled = settle_older_orders(rig.env, rig.session.broker, run_id, lambda: None, next_morning, timeout=1)
    assert settled.found_sent == [o.order_ref for o in rig.exchange.orders()]
    rig.sync()
    assert states(rig) == ["filled"]
    rig.assert_exactly_once(orders=1)
