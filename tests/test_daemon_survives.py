"""The daemon survives what heals and stops, saying which, on what does not.

A real daemon process on the simulated broker is run through another process holding SQLite's
write lock for 40 s (past the 30 s busy timeout) and through three terminated PostgreSQL
connections 4 s apart: it keeps running, its jobs book again afterwards, and the outage is one
`job_failed` exception. A lease taken by another daemon and a schema changed under it end it
with one line naming the cause. A command whose connection is terminated shows the server's
reason, not SQLAlchemy's PendingRollbackError.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from support import future, sim_world
from tradeledger.engine.ops.resilience import is_transient, retrying
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.trading.fills import list_fills
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.model import Posting, Transaction

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
reconcile_seconds = 3
heartbeat_seconds = 1
lease_seconds = 90
retry_seconds = 5
settlement_times = { CME = "21:00" }
"""


def make_env(tmp_path, db_url=None):
    home = tmp_path / "home"
    env, session = sim_world(home, CONFIG, T0, future("MBT", "MBTZ26", "202612", 90000), db_url=db_url)
    return home, env, session


def start_daemon(home):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tradeledger.cli", "--home", str(home), "daemon"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sa.exc.OperationalError:
            pass
        time.sleep(0.2)
    return False


def fills(env) -> int:
    with read_connection(env.engine) as conn:
        return len(list_fills(conn, env.ledger))


def job_failures(env) -> list[dict]:
    with read_connection(env.engine) as conn:
        return [e for e in list_exceptions(conn) if e["kind"] == "job_failed"]


def log_text(env) -> str:
    path = env.dir / "logs" / "daemon.log"
    return path.read_text() if path.exists() else ""


def stop(process) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return code, process.stderr.read()


@pytest.mark.slow
def test_the_daemon_survives_sqlite_locked_for_40_seconds(tmp_path):
    home, env, session = make_env(tmp_path)
    process = start_daemon(home)
    try:
        session.exchange().external_trade("MBTZ26", D(1), D(90000))
        assert wait_for(lambda: fills(env) == 1), process.stderr.read()
        locker = sqlite3.connect(env.dir / "tradeledger.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock ...
        session.exchange().external_trade("MBTZ26", D(1), D(90100))
        time.sleep(40)  # ... for 40 s: past the daemon's 30 s busy timeout
        assert process.poll() is None, "the daemon died while the database was locked"
        assert fills(env) == 1  # nothing could be booked meanwhile (reads still work in WAL)
        locker.execute("ROLLBACK")
        locker.close()
        assert wait_for(lambda: fills(env) == 2), "jobs did not resume after the lock"
        session.exchange().external_trade("MBTZ26", D(1), D(90200))
        assert wait_for(lambda: fills(env) == 3)
        assert process.poll() is None
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr
    failures = job_failures(env)  # one for the outage: healed by retries (warning) or a job failed (error)
    assert [e["subject"] for e in failures] == ["database"], failures
    assert failures[0]["severity"] in ("warning", "error") and "database is locked" in failures[0]["detail"]
    assert "database is locked" in log_text(env) and "retrying in" in log_text(env)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_daemon_survives_terminated_postgresql_connections(tmp_path, db_url):
    app = f"tl_daemon_{uuid.uuid4().hex[:12]}"  # this run's daemon only: other runs may share the server
    tagged = sa.engine.make_url(db_url).update_query_dict({"application_name": app})
    home, env, session = make_env(tmp_path, tagged.render_as_string(hide_password=False))
    reader = open_environment(home, "paper", db_url)  # the test's own connections are not terminated
    process = start_daemon(home)
    try:
        session.exchange().external_trade("MBTZ26", D(1), D(90000))
        assert wait_for(lambda: fills(reader) == 1), process.stderr.read()
        terminated = 0
        for _ in range(3):
            with reader.engine.connect() as conn:
                terminated += conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %(app)s", {"app": app}).scalar_one()
            time.sleep(4)
        assert terminated >= 3
        assert process.poll() is None, "the daemon died on a terminated connection"
        session.exchange().external_trade("MBTZ26", D(1), D(90100))
        assert wait_for(lambda: fills(reader) == 2), "jobs did not resume"
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr
    assert "PendingRollbackError" not in log_text(env)
    failures = job_failures(reader)
    assert [e["subject"] for e in failures] == ["database"], failures
    assert "terminat" in failures[0]["detail"]


def test_a_lost_lease_ends_the_daemon_saying_so(tmp_path):
    home, env, _ = make_env(tmp_path)
    process = start_daemon(home)
    try:
        assert wait_for(lambda: "scheduled:" in log_text(env))
        with env.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE daemon_lease SET owner = 'another-daemon'")
        code = process.wait(timeout=30)
    finally:
        _, stderr = stop(process)
    assert code == 1
    assert stderr.strip().splitlines() == [
        "error: the daemon stopped: the lease was lost to another daemon (this one was cut off longer than "
        "lease_seconds = 90): stopping so that only one runs"]


def test_a_schema_changed_under_the_daemon_ends_it_saying_so(tmp_path):
    home, env, _ = make_env(tmp_path)
    process = start_daemon(home)
    try:
        assert wait_for(lambda: "scheduled:" in log_text(env))
        with env.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999future'")
        code = process.wait(timeout=30)
    finally:
        _, stderr = stop(process)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the daemon stopped: the database schema changed")
    assert "9999future" in lines[0]


def test_retrying_heals_a_transient_failure_and_gives_up_on_anything_else(tmp_path):
    import logging

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    log = logging.getLogger("test.retrying")
    calls, heard = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sa.exc.OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))
        return "done"

    assert retrying(flaky, engine=engine, log=log, what="t", budget_seconds=10, first_wait=0.01,
                    on_retry=heard.append) == "done"
    assert len(calls) == 3 and len(heard) == 2 and all(is_transient(e) for e in heard)
    calls.clear()

    def bug():
        calls.append(1)
        raise KeyError("a bug is not retried")

    with pytest.raises(KeyError):
        retrying(bug, engine=engine, log=log, what="t", budget_seconds=10, first_wait=0.01)
    assert len(calls) == 1
    stop_event = threading.Event()
    stop_event.set()  # a stopping daemon does not wait out the budget
    started = time.monotonic()
    def locked():
        raise sa.exc.OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))

    with pytest.raises(sa.exc.OperationalError):
        retrying(locked, engine=engine, log=log, what="t", budget_seconds=30, stop_event=stop_event)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_terminated_connection_shows_its_cause_not_pending_rollback(tmp_path, db_url):
    """`_on_rollback` no longer touches the dropped connection: the caller sees the server's reason."""
    home, env, _ = make_env(tmp_path, db_url)
    cash = env.chart.cash
    txn = Transaction(T0, "deposit", "d", (Posting(cash, D(1), "USD"), Posting(env.chart.deposits, D(-1), "USD")))
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with env.engine.begin() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with sa.create_engine(db_url).connect() as killer:
                killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            env.ledger.book(txn, conn)
    assert not isinstance(excinfo.value, sa.exc.PendingRollbackError)
    cause = str(excinfo.value.orig)
    assert "terminat" in cause or "closed" in cause or "connection is lost" in cause, cause
    assert env.ledger.book(txn).created  # the next use reconnects


def test_the_daily_verify_job(tmp_path):
    """Scheduled daily; a database that fails verification is a job_failed exception naming it."""
    from tradeledger.engine.ops.daemon import Daemon

    home, env, _ = make_env(tmp_path)
    daemon = Daemon(open_environment(home, "paper"))
    assert "verify" in daemon.triggers()
    result = daemon.run_job("verify")
    assert result.ok and result.result.startswith("ok: verified")
    raw = sqlite3.connect(env.dir / "tradeledger.db")  # a posting written with the rules dropped
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f"DROP TRIGGER {name}")
    cash = raw.execute(f"SELECT id FROM account WHERE name = '{env.chart.cash}'").fetchone()[0]
    raw.execute("INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                f"VALUES (77, '2026-12-01 00:00:00.000000', {cash}, 'USD', 5, 5, 'USD')")
    raw.commit()
    raw.close()
    result = daemon.run_job("verify")
    assert not result.ok and "fails verification" in result.result
    failures = job_failures(env)
    assert [e["subject"] for e in failures] == ["verify"] and "posting" in failures[0]["detail"]
    daemon.release()
