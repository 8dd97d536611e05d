"""Alerts delivered over real sockets on loopback: an SMTP server (aiosmtpd) and a webhook receiver.

Sent once per (exception, severity reached) and channel; a channel that is down is retried with
backoff and never stops the others; the hourly rate limit holds the rest back; the daily
summary carries P&L per strategy, open exceptions and the reconciliation state.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from decimal import Decimal as D
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from tradeledger.engine.setup.environment import ConfigError, init_environment
from tradeledger.engine.trust.exceptions import acknowledge, raise_exception
from tradeledger.engine.ops.alerts import (
    AlertConfig,
    alerts_for,
    backoff,
    parse_alert_config,
    plan_delivery,
    run_alerts,
    summary_due,
)
from tradeledger.engine.tables import alert_outbox
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.model import Account, Posting, Transaction
from tradeledger.ledger.store import parse_ts

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """An HTTP receiver on 127.0.0.1 that records every JSON body posted to it."""

    def __init__(self, port: int = 0):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message."""

    def __init__(self):
        self.messages = []
        kept = self.messages

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                kept.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=tl@example.com&to=trader@example.com&mode=insecure"

    def close(self):
        self.controller.stop()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.close()


def make_env(tmp_path, urls, extra="", db_url=None):
    config = "[alerts]\nurls = [" + ", ".join(json.dumps(u) for u in urls) + "]\nsummary_time = \"\"\n" + extra
    return init_environment(tmp_path / "home", "paper", "sim", None, db_url=db_url, config_extra=config)


def raise_one(env, kind, subject, severity, now=T0):
    with env.engine.begin() as conn:
        return raise_exception(conn, kind, subject, f"{kind} on {subject}", severity=severity, now=now)


def outbox(env):
    with read_connection(env.engine) as conn:
        return conn.execute(sa.select(alert_outbox).order_by(alert_outbox.c.id)).all()


def test_alerts_reach_smtp_and_a_webhook_once(tmp_path, mailbox, webhook, db_url):
    env = make_env(tmp_path, [mailbox.url, webhook.url], db_url=db_url)
    failed = raise_one(env, "job_failed", "fill_sync", "error")
    raise_one(env, "stale_prices", "MESZ26", "warning")  # below min_severity: not sent
    raise_one(env, "reconciliation_break", "DU1234567:MESZ26", "info")  # a break is always sent
    line = run_alerts(env, T0)
    assert line.startswith("2 new") or line.startswith("4 new"), line
    assert "4 sent" in line
    subjects = sorted(m["Subject"] for m in mailbox.messages)
    assert len(subjects) == 2 and "job_failed fill_sync" in subjects[0] and "reconciliation_break" in subjects[1]
    assert "tradeledger --env paper exceptions show" in mailbox.messages[0].get_payload()[0].get_payload()
    assert sorted(b["title"] for b in webhook.bodies) == subjects

    raise_one(env, "job_failed", "fill_sync", "error", T0 + dt.timedelta(minutes=1))  # seen again
    assert run_alerts(env, T0 + dt.timedelta(minutes=2), ahead=120).startswith("0 new, 0 sent")
    assert len(mailbox.messages) == 2 and len(webhook.bodies) == 2  # deduplicated

    raise_one(env, "job_failed", "fill_sync", "critical", T0 + dt.timedelta(minutes=3))  # worse: told again
    run_alerts(env, T0 + dt.timedelta(minutes=4), ahead=240)
    assert len(mailbox.messages) == 3 and "critical" in mailbox.messages[-1]["Subject"]
    with env.engine.begin() as conn:
        acknowledge(conn, failed, "me", "on it", now=T0 + dt.timedelta(minutes=4))
    raise_one(env, "order_stuck", "r1", "error", T0 + dt.timedelta(minutes=5))
    run_alerts(env, T0 + dt.timedelta(minutes=6), ahead=360)
    assert len(webhook.bodies) == 4 and "order_stuck" in webhook.bodies[-1]["title"]


def test_a_channel_that_is_down_is_retried_and_never_stops_the_others(tmp_path, webhook, db_url):
    down_port = free_port()  # nothing listens here yet
    down = f"json://127.0.0.1:{down_port}/hook"
    env = make_env(tmp_path, [down, webhook.url], db_url=db_url)
    raise_one(env, "missed_daemon_run", "daemon", "warning")
    line = run_alerts(env, T0)
    assert "1 sent, 1 failed (will retry)" in line
    assert len(webhook.bodies) == 1
    pending = [r for r in outbox(env) if r.state == "pending"]
    assert len(pending) == 1 and pending[0].attempts == 1 and pending[0].last_error
    # backoff: not before 30 s, by the database's clock that stamped the try
    assert 29 < (parse_ts(pending[0].next_at) - parse_ts(pending[0].created_at)).total_seconds() < 40
    run_alerts(env, T0 + dt.timedelta(seconds=10), ahead=10)
    assert [r.attempts for r in outbox(env) if r.state == "pending"] == [1]  # not yet due: not tried
    late = Webhook(down_port)  # the channel comes back
    try:
        assert "1 sent" in run_alerts(env, T0 + dt.timedelta(minutes=1), ahead=60)
        assert len(late.bodies) == 1 and "missed_daemon_run" in late.bodies[0]["title"]
        assert len(webhook.bodies) == 1  # the other channel was not sent it twice
    finally:
        late.close()
    assert {r.state for r in outbox(env)} == {"sent"}


def test_a_channel_down_for_good_is_given_up_after_max_attempts(tmp_path):
    env = make_env(tmp_path, [f"json://127.0.0.1:{free_port()}/hook"], extra="max_attempts = 2\n")
    raise_one(env, "job_failed", "reconcile", "error")
    assert "1 failed" in run_alerts(env, T0)
    assert "1 given up" in run_alerts(env, T0 + dt.timedelta(hours=1), ahead=3600)
    assert [r.state for r in outbox(env)] == ["failed"]


def test_the_rate_limit_holds_the_rest_for_later(tmp_path, webhook, db_url):
    env = make_env(tmp_path, [webhook.url], extra="max_per_hour = 2\n", db_url=db_url)
    for n in range(5):
        raise_one(env, "order_stuck", f"r{n}", "error")
    assert run_alerts(env, T0).endswith("2 sent, 0 failed (will retry), 0 given up, 3 waiting")
    # the hour is the database's clock's (`ahead`: a later moment of it without waiting for it)
    assert "0 sent" in run_alerts(env, T0 + dt.timedelta(minutes=30), ahead=30 * 60)
    run_alerts(env, T0 + dt.timedelta(minutes=61), ahead=61 * 60)
    run_alerts(env, T0 + dt.timedelta(minutes=122), ahead=122 * 60)
    titles = [b["title"] for b in webhook.bodies]
    assert len(titles) == 5 and [t.split()[-1] for t in titles] == ["r0", "r1", "r2", "r3", "r4"]


def test_daily_summary_pnl_per_strategy_exceptions_and_reconciliation(tmp_path, webhook):
    env = make_env(tmp_path, [webhook.url])
    day = T0.date()
    trading = "Income:Trading:Trend"
    env.ledger.open_account(Account(trading, dt.date(2000, 1, 1)))
    env.ledger.book(Transaction(T0, "settlement", "vm", (Posting(env.chart.cash, D("125.50"), "USD"),
                                                          Posting(trading, D("-125.50"), "USD"))))
    raise_one(env, "stale_prices", "MESZ26", "warning")
    config = parse_alert_config({"alerts": {"urls": [webhook.url], "summary_time": "21:45"}}, environ={})
    assert "0 new" in run_alerts(env, T0, config=config)  # 15:00: not due; the warning is below error
    run_alerts(env, T0.replace(hour=21, minute=50), config=config)
    run_alerts(env, T0.replace(hour=22, minute=50), config=config)  # once a day
    assert len(webhook.bodies) == 1
    body = webhook.bodies[0]
    assert body["title"] == f"[tradeledger paper] daily summary {day}: 1 open exception(s)"
    assert "Trend: 125.50 USD" in body["message"] and "Open exceptions: 1 (stale_prices 1)" in body["message"]
    assert "Reconciliation: never run" in body["message"]


def test_config_and_decisions():
    assert parse_alert_config({}, environ={}).urls == ()
    env_urls = parse_alert_config({"alerts": {"urls": ["json://127.0.0.1:1/a"]}},
                                  environ={"TRADELEDGER_ALERT_URLS": "json://127.0.0.1:2/b  json://127.0.0.1:1/a"})
    assert env_urls.urls == ("json://127.0.0.1:1/a", "json://127.0.0.1:2/b")
    with pytest.raises(ConfigError, match=r"alerts.urls\[0\] is not a notification URL"):
        parse_alert_config({"alerts": {"urls": ["nonsense://x"]}}, environ={})
    with pytest.raises(ConfigError, match="TRADELEDGER_ALERT_URLS"):
        parse_alert_config({}, environ={"TRADELEDGER_ALERT_URLS": "nonsense://x"})
    with pytest.raises(ConfigError, match="min_severity"):
        parse_alert_config({"alerts": {"min_severity": "loud"}}, environ={})
    with pytest.raises(ConfigError, match="unknown"):
        parse_alert_config({"alerts": {"url": "x"}}, environ={})
    exceptions = [dict(id=i, kind=k, severity=s, subject="x", detail="", state=st, first_seen="2026", count=1)
                  for i, (k, s, st) in enumerate([("stale_prices", "warning", "open"), ("order_stuck", "error", "open"),
                                                  ("job_failed", "info", "open"), ("overfill", "critical", "acknowledged")])]
    assert [a.key for a in alerts_for(exceptions, "error", "paper")] == ["exception:1:error", "exception:2:info"]
    assert [a.key for a in alerts_for(exceptions, "warning", "paper")][0] == "exception:0:warning"
    assert plan_delivery([(3, "a"), (1, "a"), (2, "b"), (4, "a")], {"a": 1}, 2) == [1, 2]
    assert backoff(1) == dt.timedelta(seconds=30) and backoff(2) == dt.timedelta(seconds=60)
    assert backoff(20) == dt.timedelta(hours=1)
    assert summary_due(T0, dt.time(21, 45, tzinfo=UTC)) is None
    assert summary_due(T0, dt.time(9, 0, tzinfo=UTC)) == T0.date()
    assert AlertConfig(urls=("json://a",)).channels


DAEMON_CONFIG = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1
exchange = "CME"

[strategies.trend]
instruments = {{ MBT = 1 }}

[daemon]
fill_sync_seconds = 1
reconcile_seconds = 1
heartbeat_seconds = 1
lease_seconds = 3

[alerts]
urls = ["{down}"]
every_seconds = 1
summary_time = ""

[health]
port = 0
"""


def test_a_channel_that_is_down_does_not_stop_the_daemon(tmp_path):
    import time
    import urllib.request

    from tradeledger.engine.ops.daemon import Daemon
    from tradeledger.engine.setup.config import to_contract
    from tradeledger.engine.setup.session import Session

    down = f"json://127.0.0.1:{free_port()}/hook"
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=DAEMON_CONFIG.format(down=down))
    exchange = Session(env).exchange()
    exchange.set_clock(T0)
    exchange.add_contract(to_contract(Session(env).config.instruments["MBT"], "MBTZ26", "202612"))
    exchange.set_price("MBTZ26", D(90000))
    exchange.external_trade("MBTZ26", D(1), D(90000))
    raise_one(env, "job_failed", "targets", "error")

    once = Daemon(env)  # `daemon --once`: every job, alerts last, all succeed though the channel is down
    once.acquire()
    try:
        assert once.run_once(), [r.result for r in once.results]
        # The one error exception (the exchange's clock, hours from the wall clock, does not make the
        # daemon's heartbeat look silent: that is measured by the database's clock it is written by).
        assert once.results[-1].name == "alerts" and "0 sent, 1 failed (will retry)" in once.results[-1].result
    finally:
        once.release()

    daemon = Daemon(env)  # scheduled: the jobs go on while the alert waits for its channel
    daemon.acquire()
    thread = threading.Thread(target=daemon.serve, kwargs={"install_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                sum(r.name == "fill_sync" and r.ok for r in daemon.results) >= 2
                and any(r.name == "alerts" for r in daemon.results)):
            time.sleep(0.2)
        assert sum(r.name == "fill_sync" and r.ok for r in daemon.results) >= 2
        assert all(r.ok for r in daemon.results), [r.result for r in daemon.results if not r.ok]
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.health.port}/health", timeout=10) as response:
            report = json.loads(response.read())
        assert response.status == 200 and report["jobs"]["alerts"]["ok"], report
    finally:
        daemon.stop_event.set()
        thread.join(timeout=20)
        daemon.release()
    assert not thread.is_alive()
    rows = outbox(env)
    assert len(rows) == 1 and all(r.state == "pending" and r.attempts >= 1 and r.last_error for r in rows)
