"""The daemon's health endpoint and Prometheus metrics, read over HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from decimal import Decimal as D

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import future, sim_world
from tradeledger.engine.ops.daemon import Daemon
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.ops.health import HealthServer, JobState, Probe, assess, parse_health_config

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
heartbeat_seconds = 1
lease_seconds = 3
"""


def make_env(tmp_path, extra=""):
    env, session = sim_world(tmp_path / "home", CONFIG + extra, T0, future("MBT", "MBTZ26", "202612", 90000))
    return env, session.exchange()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics(port: int) -> dict:
    status, body = get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_health_and_metrics_of_a_running_daemon(tmp_path):
    env, exchange = make_env(tmp_path)
    exchange.external_trade("MBTZ26", D(1), D(90000))  # a trade without orderRef: an exception
    daemon = Daemon(env)
    daemon.acquire()
    server = HealthServer(Probe(env, daemon))
    port = server.start()
    try:
        assert daemon.run_once()
        status, body = get(port, "/health")
        report = json.loads(body)
        assert status == 200 and report["ok"] is True, report
        assert report["lease"]["ours"] is True and report["heartbeat"]["state"] == "running"
        assert 0 < report["lease"]["expires_in_seconds"] <= 3  # lease_seconds, by the database's clock
        assert 0 <= report["heartbeat"]["age_seconds"] < 30
        assert report["jobs"]["fill_sync"]["ok"] and report["jobs"]["fill_sync"]["result"].startswith("ok: 1 fills")
        assert set(report["jobs"]) >= {"fill_sync", "reconcile", "monitor"}

        m = metrics(port)
        assert m[("tradeledger_up", ())] == 1 and m[("tradeledger_lease_held", ())] == 1
        assert m[("tradeledger_reconciliation_clean", ())] == 1 and m[("tradeledger_reconciliation_breaks", ())] == 0
        assert m[("tradeledger_open_exceptions", (("kind", "unattributed_fill"), ("severity", "warning")))] == 1
        assert 0 <= m[("tradeledger_fill_sync_age_seconds", ())] < 30
        assert m[("tradeledger_job_last_success", (("job", "fill_sync"),))] == 1
        bookings = {labels: v for (name, labels), v in m.items() if name == "tradeledger_bookings_total"}
        assert sum(bookings.values()) == env.ledger.count()[0] and sum(bookings.values()) >= 1
        assert m[("tradeledger_alerts", (("state", "pending"),))] == 0

        exchange.external_trade("MBTZ26", D(2), D(90100))
        daemon.run_job("fill_sync")
        assert sum(v for (name, _), v in metrics(port).items() if name == "tradeledger_bookings_total") \
            > sum(bookings.values())  # counts follow the books
        assert get(port, "/nothing")[0] == 404
    finally:
        daemon.release()
    status, body = get(port, "/health")  # the daemon stopped: a monitor sees 503 and why
    assert status == 503
    assert "no daemon holds the lease" in json.loads(body)["reasons"]
    assert metrics(port)[("tradeledger_lease_held", ())] == 0
    server.stop()


def test_a_failed_job_makes_the_daemon_unhealthy(tmp_path):
    env, _exchange = make_env(tmp_path)
    daemon = Daemon(env)
    daemon.acquire()
    server = HealthServer(Probe(env, daemon))
    port = server.start()
    try:
        assert not daemon.run_job("no_such_job").ok
        status, body = get(port, "/health")
        assert status == 503 and any("job no_such_job failed" in r for r in json.loads(body)["reasons"])
        assert metrics(port)[("tradeledger_job_last_success", (("job", "no_such_job"),))] == 0
    finally:
        daemon.release()
        server.stop()


def test_assess_and_config():
    lease = {"owner": "me", "expires_at": "2026-12-01 15:01:00.000000"}
    beat = {"at": "2026-12-01 14:59:58.000000", "state": "running"}
    limit = dt.timedelta(seconds=30)
    assert assess(T0, lease, "me", beat, [JobState("fill_sync", True, "ok", T0)], limit) == []
    assert assess(T0, lease, "you", beat, [], limit) == ["the lease is held by another daemon (me)"]
    old = {"at": "2026-12-01 14:50:00.000000", "state": "running"}
    assert assess(T0, lease, "me", old, [], limit) == ["the heartbeat is 600 s old"]
    assert assess(T0 + dt.timedelta(minutes=2), lease, "me", beat, [], dt.timedelta(hours=1)) == [
        "the lease expired at 2026-12-01 15:01:00 UTC"]
    assert parse_health_config({}).port is None
    assert parse_health_config({"health": {"port": 9464}}) .port == 9464
    with pytest.raises(ConfigError, match="loopback"):
        parse_health_config({"health": {"port": 9464, "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="loopback"):
        HealthServer(None, host="0.0.0.0")  # type: ignore[arg-type]
