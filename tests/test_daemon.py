"""The daemon on the simulated broker: --once, the lease, a failing job, SIGTERM, logs and config."""

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
from click.testing import CliRunner

from support import future, sim_world
from tradeledger.cli import main
from tradeledger.engine.ops.daemon import Daemon, DaemonAlreadyRunning, acquire_lease, read_heartbeat
from tradeledger.engine.ops.jobs import parse_daemon_config
from tradeledger.engine.setup.environment import ConfigError, init_environment, open_environment
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trading.fills import list_fills
from tradeledger.engine.tables import daemon_lease
from tradeledger.ledger.db import read_connection

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
reconcile_seconds = 2
heartbeat_seconds = 1
lease_seconds = 3
settlement_times = { CME = "21:00" }
"""


def make_env(tmp_path, extra="", db_url=None):
    home = tmp_path / "home"
    env, session = sim_world(home, CONFIG + extra, T0, future("MBT", "MBTZ26", "202612", 90000), db_url=db_url)
    return home, env, session


def cli(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)


def open_exceptions(env):
    with read_connection(env.engine) as conn:
        return list_exceptions(conn, "open")


def test_once_runs_every_job_and_writes_a_heartbeat(tmp_path):
    home, env, session = make_env(tmp_path)
    session.exchange().external_trade("MBTZ26", D(1), D(90000))
    result = cli(home, "daemon", "--once")
    assert result.exit_code == 0, result.output
    assert "fill_sync: ok: 1 fills booked" in result.output
    assert "settle:CME: ok" in result.output and "reconcile: ok: clean=True" in result.output
    assert "monitor: ok: " in result.output
    with read_connection(env.engine) as conn:
        assert len(list_fills(conn, env.ledger)) == 1
        beat = read_heartbeat(conn, "paper")
        assert conn.execute(sa.select(daemon_lease)).first() is None  # released
    assert beat["state"] == "stopped" and beat["last_job"] == "monitor" and beat["pid"] == os.getpid()
    log = (env.dir / "logs" / "daemon.log").read_text()
    assert "job fill_sync ok" in log and "lease released" in log


def test_a_second_daemon_is_refused_while_the_lease_is_held(tmp_path):
    home, env, _ = make_env(tmp_path)
    first = Daemon(env)
    first.acquire()
    result = cli(home, "daemon", "--once")
    assert result.exit_code == 1 and "a daemon already runs for the paper environment" in result.output
    with pytest.raises(DaemonAlreadyRunning):
        acquire_lease(env, "someone-else", 10)
    # A lease that has expired (its holder died) is taken over: a newcomer 10 s later by the database's clock.
    acquire_lease(env, "successor", 10, ahead=10)
    with read_connection(env.engine) as conn:
        assert conn.execute(sa.select(daemon_lease.c.owner)).scalar() == "successor"
    first.release()  # not its lease any more: releases nothing of the successor's
    with read_connection(env.engine) as conn:
        assert conn.execute(sa.select(daemon_lease.c.owner)).scalar() == "successor"


def test_a_failing_job_becomes_an_exception_and_the_daemon_goes_on(tmp_path):
    home, env, session = make_env(tmp_path, 'data_csv = "missing.csv"\ndata_time = "21:30"\n')
    session.exchange().external_trade("MBTZ26", D(2), D(90000))
    result = cli(home, "daemon", "--once")
    assert result.exit_code == 1
    assert "data_update: failed" in result.output and "fill_sync: ok: 1 fills booked" in result.output
    failed = [e for e in open_exceptions(env) if e["kind"] == "job_failed"]
    assert [(e["subject"], e["severity"]) for e in failed] == [("data_update", "error")]
    cli(home, "daemon", "--once")  # fails again: still one exception, counted twice
    failed = [e for e in open_exceptions(env) if e["kind"] == "job_failed"]
    assert len(failed) == 1 and failed[0]["count"] == 2
    (env.dir / "missing.csv").write_text("date,instrument,close\n2026-12-01,MBT,90000\n")
    assert cli(home, "daemon", "--once").exit_code == 0
    assert not [e for e in open_exceptions(env) if e["kind"] == "job_failed"]  # resolved by the next success


def start_daemon(home, *args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tradeledger.cli", "--home", str(home), "daemon", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def heartbeat(env):
    with read_connection(env.engine) as conn:
        return read_heartbeat(conn, "paper")


def test_sigterm_stops_the_daemon_cleanly_between_jobs(tmp_path, wait_for):
    home, env, session = make_env(tmp_path)
    process = start_daemon(home)
    try:
        assert wait_for(lambda: (heartbeat(env) or {}).get("last_job") == "fill_sync"), process.stderr.read1()
        session.exchange().external_trade("MBTZ26", D(1), D(90000))
        assert wait_for(lambda: len(list_fills(read_connection(env.engine), env.ledger)) == 1)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, process.stderr.read()
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
    beat = heartbeat(env)
    assert beat["state"] == "stopped"
    with read_connection(env.engine) as conn:
        assert conn.execute(sa.select(daemon_lease)).first() is None
        jobs = conn.execute(sa.text("SELECT id FROM tl_apscheduler_jobs")).scalars().all()
    assert set(jobs) == {"paper:fill_sync", "paper:reconcile", "paper:monitor", "paper:settle:CME",
                         "paper:backup", "paper:verify"}  # in the same database; backup and verify daily


def test_a_killed_daemon_is_replaced_once_its_lease_expires(tmp_path, wait_for):
    home, env, _ = make_env(tmp_path)
    process = start_daemon(home)
    try:
        assert wait_for(lambda: heartbeat(env) is not None)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    refused = cli(home, "daemon", "--once")
    assert refused.exit_code == 1 and "already runs" in refused.output
    # lease_seconds = 3: once the dead daemon's lease expires, a new one takes it over
    assert wait_for(lambda: cli(home, "daemon", "--once").exit_code == 0, timeout=15)


def test_daemon_config_is_validated_and_logs_never_hold_secrets(tmp_path):
    for bad, why in [({"fill_sync_seconds": 0}, "positive"), ({"settlement_times": {"CME": "9pm"}}, "HH:MM"),
                     ({"data_csv": "x.csv"}, "data_time"), ({"frequency": 1}, "unknown"),
                     ({"heartbeat_seconds": 40, "lease_seconds": 60}, "half")]:
        with pytest.raises(ConfigError, match=why):
            parse_daemon_config({"daemon": bad})
    config = parse_daemon_config({})
    assert config.job_names() == ["fill_sync", "reconcile", "monitor"]  # no futures: nothing to settle
    # every exchange of a configured future is settled, at its known time unless the config names one
    raw = {"instruments": {"MES": {"type": "future", "exchange": "CME"}, "FESX": {"type": "future", "exchange": "EUREX"},
                           "Z": {"type": "future", "exchange": "ICEEU"}, "SPY": {"type": "share", "exchange": "ARCA"}},
           "daemon": {"settlement_times": {"EUREX": "17:30"}}}
    config = parse_daemon_config(raw)
    assert config.job_names() == ["fill_sync", "settle:CME", "settle:EUREX", "settle:ICEEU", "reconcile", "monitor"]
    assert config.settlement_times["EUREX"].strftime("%H:%M") == "17:30"
    assert config.settlement_times["ICEEU"].strftime("%H:%M") == "17:45"
    home, env, _ = make_env(tmp_path)
    daemon = Daemon(open_environment(home, "paper"))
    daemon.log.info("connecting to postgresql+psycopg://trader:hunter2@db/x with password=hunter2")
    for handler in daemon.log.handlers:
        handler.flush()
    text = (env.dir / "logs" / "daemon.log").read_text()
    assert "hunter2" not in text and "trader:***@db" in text


# -- paper and live, hard ---------------------------------------------------------------------------

def test_paper_and_live_share_no_client_id_and_no_log_file(tmp_path):
    home = tmp_path / "home"
    init_environment(home, "paper", "ib", "DU1111111", ib_port=4002, ib_client_id=7)
    with pytest.raises(ConfigError, match="already uses IB client id 7"):
        init_environment(home, "live", "ib", "U7654321", ib_port=4001, ib_client_id=7)
    shared = tmp_path / "shared.log"
    other = tmp_path / "other"
    init_environment(other, "paper", "sim", None, config_extra=f'[daemon]\nlog_file = "{shared}"\n')
    with pytest.raises(ConfigError, match="already logs to"):
        init_environment(other, "live", "ib", "U7654321", ib_port=4001, config_extra=f'[daemon]\nlog_file = "{shared}"\n')
    init_environment(home, "live", "ib", "U7654321", ib_port=4001, ib_client_id=8)  # apart: accepted


@pytest.mark.parametrize("command", [["orders", "submit", "1"], ["cycle", "--approve"]])
def test_live_order_submission_asks_for_confirmation(tmp_path, command):
    home = tmp_path / "home"
    env = init_environment(home, "live", "ib", "U7654321", ib_port=4001)
    result = CliRunner().invoke(main, ["--home", str(home), "--env", "live", *command], input="n\n")
    assert result.exit_code == 1 and "LIVE account U7654321" in result.output and "Aborted" in result.output
    with read_connection(env.engine) as conn:  # nothing recorded, nothing sent
        assert conn.execute(sa.text("SELECT count(*) FROM broker_order")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM target_run")).scalar() == 0
