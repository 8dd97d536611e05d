"""Leases between hosts whose clocks disagree: the database's clock decides, not the caller's.

On PostgreSQL two hosts can share one ledger. A lease (the daemon's `daemon_lease`, the trading
`trading_lease`) used to be written as the holder's clock + its length and judged expired by the
newcomer's clock: with the newcomer's clock ten minutes ahead it took over a live lease (two
daemons, two traders sending the same planned orders); with the holder's clock ahead, a dead
holder's lease kept the environment ten minutes past its real expiry. Now both the expiry and the
comparison are the database's clock, in the statement that writes or judges them.

A host whose clock is off is a real process run under libfaketime (`faketime -f +600`, the
monotonic clock left alone; tests/skewed_host.py): everything in it, Python and the libraries it
loads, reads the skewed time; the PostgreSQL server, like a real second host's database, does not.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.trading import lease
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.store import parse_ts
from skewed_host import SKEWED_CLI, database_now, host_clock, kill_all, start_at, tl_at
from test_daemon import heartbeat, make_env
from test_never_twice import CLI, assert_agrees, demo_home, orders_recorded, sent_count, tl, wait_for_lease

SKEW = 600  # ten minutes


def test_the_skew_is_real():
    """The harness: a process under `skewed` reads a clock ten minutes ahead."""
    assert abs(host_clock(SKEW) - host_clock(0) - SKEW) < 30


# -- the daemon's lease ---------------------------------------------------------------------------------

def test_a_daemon_on_a_host_ten_minutes_ahead_does_not_take_a_live_lease(pg_url, tmp_path, wait_for):
    home, env, _ = make_env(tmp_path, db_url=pg_url)
    first = subprocess.Popen([*CLI, "--home", str(home), "daemon"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert wait_for(lambda: heartbeat(env) is not None), "the daemon never beat"
        with read_connection(env.engine) as conn:
            holder = conn.execute(sa.select(tables.daemon_lease.c.owner)).scalar()
        second = tl_at(SKEW, home, "daemon", "--once")
        assert second.returncode == 1 and "a daemon already runs for the paper environment" in second.stdout + \
            second.stderr, (second.stdout, second.stderr)
        time.sleep(2)  # a few of the first daemon's beats: it still holds its lease and runs
        with read_connection(env.engine) as conn:
            assert conn.execute(sa.select(tables.daemon_lease.c.owner)).scalar() == holder
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    env.engine.dispose()


def health_port(env) -> int | None:
    log = env.dir / "logs" / "daemon.log"
    found = re.search(r"health endpoint on http://127\.0\.0\.1:(\d+)/health", log.read_text() if log.exists() else "")
    return int(found.group(1)) if found else None


def test_a_dead_daemon_whose_clock_ran_ahead_is_replaced_once_its_lease_really_expires(pg_url, tmp_path, wait_for):
    """A daemon on a host ten minutes ahead writes its lease by the database's clock (and its health
    endpoint says it holds it); SIGKILLed, it is replaced once that lease expires, not ten minutes later."""
    home, env, _ = make_env(tmp_path, "[health]\nport = 0\n", db_url=pg_url)  # lease_seconds = 3
    first = start_at(SKEW, *SKEWED_CLI, "--home", home, "daemon")
    try:
        assert wait_for(lambda: heartbeat(env) is not None and health_port(env)), "the skewed daemon never beat"
        with read_connection(env.engine) as conn:
            expires = conn.execute(sa.select(tables.daemon_lease.c.expires_at)).scalar()
        # by the database's clock: the lease ends a lease from now, not ten minutes later
        assert (parse_ts(expires) - database_now(env.engine)).total_seconds() <= 3 + 1
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port(env)}/health", timeout=10) as response:
            report = json.loads(response.read())
        assert report["ok"] and report["lease"]["ours"], report  # not "the lease expired" by its own clock
        assert 0 < report["lease"]["expires_in_seconds"] <= 3, report
        assert 0 <= report["heartbeat"]["age_seconds"] < 30, report  # by the database's clock, as stamped
    finally:
        kill_all(first)  # SIGKILL: the daemon dies holding its lease
    killed, tries = time.monotonic(), []
    assert wait_for(lambda: tries.append(tl(home, "daemon", "--once")) or tries[-1].returncode == 0, timeout=60), \
        (tries[-1].stdout, tries[-1].stderr)
    assert time.monotonic() - killed < 30  # its 3 s lease, and the time to start a daemon, not 600 s
    env.engine.dispose()


# -- the trading lease ------------------------------------------------------------------------------------

def test_a_trader_on_a_host_ten_minutes_ahead_is_refused_while_a_cycle_holds_the_lease(pg_url, tmp_path):
    """A cycle holds the lease, paused after recording its plan; a `cycle --approve` and a `monitor` on a
    host ten minutes ahead see it live: the cycle is refused (before, it took the lease over and sent
    the same planned orders), the monitor finds no interrupted run (before, it raised order_stuck)."""
    home = demo_home(tmp_path / "home", pg_url, trading="lease_wait_seconds = 1")
    go = tmp_path / "go"
    first = subprocess.Popen([*CLI, "--home", str(home), "cycle", "--approve", "--run", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TRADELEDGER_PAUSE_AT": f"recorded:@{go}"})
    try:
        wait_for_lease(home)
        deadline = time.monotonic() + 120
        while not (tmp_path / "go.reached").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "go.reached").exists(), "the first cycle never recorded its plan"
        refused = tl_at(SKEW, home, "cycle", "--approve", "--run", 1)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "being traded by `cycle --approve`" in refused.stderr and f"pid {first.pid}" in refused.stderr
        monitor = tl_at(SKEW, home, "monitor", "--json")
        stuck = [f for f in json.loads(monitor.stdout) if f["kind"] == "order_stuck"]
        assert not stuck, monitor.stdout
    finally:
        go.touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, (out, err)
    assert sent_count(out) == orders_recorded(home) > 0
    assert_agrees(home, 1, tmp_path)


STALL = textwrap.dedent("""
    import sys, threading
    from tradeledger.engine.setup.environment import open_environment
    from tradeledger.engine.trading import lease
    env = open_environment(sys.argv[1], "paper")
    assert lease.try_acquire(env.engine, "paper", "elsewhere:1:stalled", "cycle --approve (run 1)", 2) is None
    print("held", flush=True)
    threading.Event().wait(600)  # alive, never renewing: a stalled holder
""")


def test_a_stalled_trader_whose_clock_ran_ahead_is_taken_over_once_its_lease_really_expires(pg_url, tmp_path):
    """A trader on a host ten minutes ahead takes a 2 s lease and stalls (alive, never renewing): a
    trader here takes it over once those 2 s have passed by the database's clock, not ten minutes later."""
    home = demo_home(tmp_path / "home", pg_url)
    stalled = start_at(SKEW, sys.executable, "-c", STALL, home)
    env = open_environment(home, "paper")
    try:
        assert stalled.stdout.readline().strip() == "held", stalled.stderr.read()
        started = time.monotonic()
        with lease.hold(env, "orders submit (run 1)", wait=20) as held:
            assert lease.live_holder(env.engine, env.name).owner == held.owner
            assert stalled.poll() is None  # taken over by its expiry, not because its process was gone
        assert time.monotonic() - started < 10
    finally:
        kill_all(stalled)
        env.engine.dispose()
