"""Crashes and concurrent writers, with real processes and real databases.

- The process is killed (SIGKILL) after the broker accepted an order and before tradeledger
  recorded that it was sent or booked its fill; on restart the order is found at the broker by
  its orderRef (not sent twice) and the fill is booked once.
- A daemon process syncs fills while this process books entries into the same database, on
  SQLite and on PostgreSQL: afterwards every execution is booked exactly once and the ledger
  balances and checks clean.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal as D

import sqlalchemy as sa

from support import future, sim_world
from tradeledger.engine.trust import adjust
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import holder_positions, send_planned
from tradeledger.engine import tables
from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
CONFIG = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1
exchange = "CME"

[strategies.trend]
instruments = { MBT = 1 }

[daemon]
fill_sync_seconds = 1
reconcile_seconds = 3600
heartbeat_seconds = 1
lease_seconds = 5
settlement_times = {}
"""


def make_env(tmp_path, db_url=None):
    home = tmp_path / "home"
    env, session = sim_world(home, CONFIG, T0, future("MBT", "MBTZ26", "202612", 90000), db_url=db_url)
    return home, env, session


def assert_books_true(env, tmp_path):
    path = tmp_path / "check.beancount"
    export_beancount(env.ledger, path)
    result = check(env.ledger, path)
    assert result.ok, result
    with read_connection(env.engine) as conn:
        residual = conn.execute(sa.select(schema.posting.c.weight_currency, sa.func.sum(schema.posting.c.weight))
                                .group_by(schema.posting.c.weight_currency)).all()
    assert all(total == 0 for _, total in residual), residual


CRASHER = """
import os, signal, sys, datetime as dt
from decimal import Decimal as D
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.setup.session import Session

env = open_environment(sys.argv[1], "paper")
session = Session(env)
contract = to_contract(session.config.instruments["MBT"], "MBTZ26", "202612")
now = session.now()
lines = [TargetLine("Trend", "MBT", contract, D(3), D(90000))]
order_plan = plan(1, lines, holder_positions(env.ledger, env.chart), Limits(), {})
record_plan(env, order_plan, now)
broker = session.broker
real = broker.place_order
def place_then_die(request):
    status = real(request)          # the broker has it (and fills it: a market order)
    print("SENT", request.order_ref, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)   # before the order row says 'sent', before any fill is booked
broker.place_order = place_then_die
send_planned(env, broker, 1, now)
print("NOT KILLED", flush=True)
"""


def test_killed_between_sending_an_order_and_booking_its_fill(tmp_path):
    home, env, session = make_env(tmp_path)
    script = tmp_path / "crasher.py"
    script.write_text(textwrap.dedent(CRASHER))
    done = subprocess.run([sys.executable, str(script), str(home)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.startswith("SENT tl-paper-")
    with read_connection(env.engine) as conn:
        [order] = conn.execute(sa.select(tables.broker_order)).all()
        assert order.state == "planned"  # the crash came before the row was updated
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.fill)).scalar() == 0
    # Restart: the planned order is looked up at the broker by orderRef before anything is sent.
    report = send_planned(env, session.broker, 1, session.now())
    assert report.already_at_broker == [order.order_ref]  # recorded as sent, not sent again
    assert report.sent == []
    assert len(session.exchange().orders()) == 1  # not sent twice
    first = sync_fills(env, session.broker)
    again = sync_fills(env, session.broker)
    assert len(first.booked) == 1 and again.booked == [] and again.replays == 1
    assert holder_positions(env.ledger, env.chart) == {("Trend", "MBTZ26"): D(3)}
    with read_connection(env.engine) as conn:
        assert conn.execute(sa.select(tables.broker_order.c.state)).scalar() == "filled"
    assert_books_true(env, tmp_path)


def test_daemon_and_cli_write_at_the_same_time(tmp_path, db_url, wait_for):
    """`db_url` (conftest) runs this on SQLite and on PostgreSQL."""
    home, env, session = make_env(tmp_path, db_url)
    exchange = session.exchange()
    daemon = subprocess.Popen([sys.executable, "-m", "tradeledger.cli", "--home", str(home), "daemon"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ctx = env
        trades = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # executions arrive while this process books entries
            exchange.external_trade("MBTZ26", D(1 if trades % 2 == 0 else -1), D(90000 + trades))
            trades += 1
            now = dt.datetime.now(UTC)
            key = adjust.new_key("cash", env.chart)
            adjust.book(ctx, lambda conn: adjust.plan_cash(conn, ctx, "USD", D("0.01"), "interest",
                                                                       now, key, "interest"), "test")
            if trades % 5 == 0:  # and this process syncs too, racing the daemon for the same fills
                sync_fills(env, session.broker)
            time.sleep(0.05)
        log_path = env.dir / "logs" / "daemon.log"
        assert wait_for(lambda: log_path.exists() and "fills booked" in log_path.read_text(), timeout=60)  # a daemon sync
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0, daemon.stderr.read()
    finally:
        if daemon.poll() is None:
            daemon.kill()
    sync_fills(env, session.broker)
    with read_connection(env.engine) as conn:
        keys = conn.execute(sa.select(tables.fill.c.exec_key)).scalars().all()
        cash_entries = conn.execute(sa.select(sa.func.count()).select_from(schema.txn).where(
            schema.txn.c.kind == "cash-adjust")).scalar()
    assert len(keys) == len(set(keys)) == trades  # every execution booked exactly once
    assert cash_entries == trades
    log = (env.dir / "logs" / "daemon.log").read_text()
    assert "fills booked" in log
    assert_books_true(env, tmp_path)
