"""The daemon's heartbeat between hosts whose clocks disagree: its age is the database's clock's.

On PostgreSQL a daemon on one host and `tradeledger monitor` on another share one ledger. The
heartbeat used to be stamped by the daemon's clock and judged silent (`missed_daemon_run`, an error
exception and an alert) by the monitor's: a monitor on a host 20 minutes ahead called a live daemon
silent, one 20 minutes behind never saw a dead one. Now the heartbeat is stamped by the database's
clock in the statement that writes it, and its age is that clock's, read with it.

The second host is a real process under libfaketime (tests/skewed_host.py). Silence is real in
these tests (a SIGKILLed daemon and `daemon_silence_minutes = 1`); the tests on both backends that
need an old heartbeat without waiting for it write one explicitly earlier (`ahead=`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import sqlalchemy as sa

from tradeledger.engine.ops.daemon import Daemon, write_heartbeat
from tradeledger.engine.ops.health import Probe
from tradeledger.engine.ops.status import operations_status
from tradeledger.engine.tables import daemon_heartbeat
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trust.monitor import check
from tradeledger.ledger import dbclock
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.store import parse_ts
from skewed_host import database_now, tl_at
from test_daemon import heartbeat, make_env
from test_never_twice import CLI

SKEW = 20 * 60  # more than daemon_silence_minutes (15), either way


def missed(result: subprocess.CompletedProcess) -> list[dict]:
    """The missed_daemon_run findings of a `monitor --json` run."""
    assert result.returncode in (0, 1), (result.stdout, result.stderr)
    return [f for f in json.loads(result.stdout) if f["kind"] == "missed_daemon_run"]


def start_daemon(home) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--home", str(home), "daemon"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_monitor_on_a_host_twenty_minutes_ahead_does_not_call_a_live_daemon_silent(pg_url, tmp_path, wait_for):
    """Before: `wall - at` was 20 minutes on that host: 'the daemon says it is running but its last
    heartbeat is 20 minutes old', an error exception and an alert, while the daemon beat every second."""
    home, env, _ = make_env(tmp_path, db_url=pg_url)
    daemon = start_daemon(home)
    try:
        assert wait_for(lambda: heartbeat(env) is not None), "the daemon never beat"
        result = tl_at(SKEW, home, "monitor", "--json")
        assert missed(result) == [], result.stdout
        shown = tl_at(SKEW, home, "status", "--no-broker", "--json")  # status there shows the heartbeat as stored
        assert shown.returncode == 0, shown.stderr
        beat = json.loads(shown.stdout)["daemon_heartbeat"]
        assert beat["state"] == "running"
        # stamped by the database's clock: seconds old by it, not 20 minutes in anyone's future or past
        assert abs((database_now(env.engine) - parse_ts(beat["at"])).total_seconds()) < 30
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    with read_connection(env.engine) as conn:
        assert not [e for e in list_exceptions(conn) if e["kind"] == "missed_daemon_run"]
    env.engine.dispose()


def test_a_monitor_on_a_host_twenty_minutes_behind_sees_a_daemon_that_really_went_silent(pg_url, tmp_path,
                                                                                        wait_for):
    """A daemon here is SIGKILLed (its heartbeat still says running); after a minute of silence by the
    database's clock a monitor on a host 20 minutes behind raises missed_daemon_run. Before, it
    measured the silence as minus 19 minutes and would have for the next 20 minutes."""
    home, env, _ = make_env(tmp_path, "[monitor]\ndaemon_silence_minutes = 1\n", db_url=pg_url)
    daemon = start_daemon(home)
    try:
        assert wait_for(lambda: heartbeat(env) is not None), "the daemon never beat"
    finally:
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.communicate(timeout=30)
    assert heartbeat(env)["state"] == "running"
    assert missed(tl_at(-SKEW, home, "monitor", "--json")) == []  # not silent yet: not a minute

    def age() -> float:
        return (database_now(env.engine) - parse_ts(heartbeat(env)["at"])).total_seconds()
    assert wait_for(lambda: age() > 62, timeout=90, step=0.5)
    [finding] = missed(tl_at(-SKEW, home, "monitor", "--json"))
    assert finding["severity"] == "error" and "heartbeat is 1 minutes old" in finding["detail"], finding
    with read_connection(env.engine) as conn:
        assert [e["subject"] for e in list_exceptions(conn, "open") if e["kind"] == "missed_daemon_run"] == ["daemon"]
    env.engine.dispose()


def test_the_heartbeat_is_stamped_and_aged_by_the_database_clock(db_url, tmp_path):
    """On both backends: the heartbeat's `at` is the database's clock at the write; the monitor, the
    health endpoint and status read its age against that clock. An old heartbeat is written as one
    (`ahead=`, tests only), not by a skewed clock handed to the daemon."""
    home, env, session = make_env(tmp_path, db_url=db_url)
    daemon = Daemon(env)
    daemon.acquire()
    try:
        with read_connection(env.engine) as conn:
            at, now = conn.execute(sa.select(daemon_heartbeat.c.at, dbclock.now(conn.dialect.name))).one()
        assert 0 <= (parse_ts(now) - parse_ts(at)).total_seconds() < 10
        assert not [f for f in check(session) if f.kind == "missed_daemon_run"]

        write_heartbeat(env, daemon.owner, ahead=-16 * 60)  # its last beat 16 minutes ago by the database
        [finding] = [f for f in check(session) if f.kind == "missed_daemon_run"]
        assert "heartbeat is 16 minutes old" in finding.detail
        report = Probe(env, daemon).health()
        assert not report["ok"] and 16 * 60 <= report["heartbeat"]["age_seconds"] < 16 * 60 + 30, report
        assert "the heartbeat is 96" in " ".join(report["reasons"]), report["reasons"]  # 960 s and a few
        shown = operations_status(env, probe_broker=False)["daemon_heartbeat"]
        assert shown["at"] == heartbeat(env)["at"] and shown["state"] == "running"

        write_heartbeat(env, daemon.owner, ahead=-14 * 60)  # within daemon_silence_minutes: resolved
        assert not [f for f in check(session) if f.kind == "missed_daemon_run"]
        with read_connection(env.engine) as conn:
            assert not [e for e in list_exceptions(conn, "open") if e["kind"] == "missed_daemon_run"]

        write_heartbeat(env, daemon.owner)
        assert Probe(env, daemon).health()["heartbeat"]["age_seconds"] < 10
    finally:
        daemon.release()
        session.close()
    assert heartbeat(env)["state"] == "stopped"
    env.engine.dispose()
