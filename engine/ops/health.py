"""Health for monitors: an optional HTTP endpoint of the daemon, on loopback only.

    GET /health    JSON: the environment, the lease (who holds it, until when and how long from
                   now by the database's clock, whether it is this daemon's), the heartbeat's
                   age (by the database's clock), the last result of every job, and `ok` with the reasons it is not: 200
                   when ok, 503 when not (a monitor needs no parsing)
    GET /metrics   Prometheus text (prometheus-client), read from the database at scrape time:

        tradeledger_up                                   1 while the endpoint answers
        tradeledger_lease_held                           1 when this daemon holds the lease
        tradeledger_heartbeat_age_seconds                since the daemon last showed life (database's clock)
        tradeledger_fill_sync_age_seconds                since the last successful fill sync
        tradeledger_job_last_success{job}                1/0: how each job's last run ended
        tradeledger_job_last_run_timestamp_seconds{job}
        tradeledger_open_exceptions{kind,severity}       open or acknowledged exceptions
        tradeledger_reconciliation_clean                 1/0: the last reconciliation
        tradeledger_reconciliation_breaks
        tradeledger_reconciliation_age_seconds           since it was written (database's clock)
        tradeledger_bookings_total{kind}                 ledger entries by kind (append-only)
        tradeledger_alerts{state}                        the alert outbox: pending, sent, failed

`assess` (pure) decides health from the lease, the heartbeat and the jobs' results, each by the
clock that wrote it. The lease's expiry and the heartbeat's `at` are the database's clock
(ledger/dbclock.py, daemon.write_heartbeat), read here in the query that reads the heartbeat:
measured by the daemon's own clock, a daemon on a host ten minutes ahead would answer 503 "the
heartbeat is 600 s old" while `tradeledger monitor` (which measures it by the database's clock
too) found it alive; one rule, so the endpoint and the monitor never disagree. The last
reconciliation's age is the database's clock too: `reconciliation.written_at`, stamped by the
insert, against that clock read with the row. Its `run_at` is the environment's clock of
whichever process reconciled (on sim the exchange's, days from the machine's as a walk-through
sets it; elsewhere that host's): subtracted from this daemon's clock it gave an age of days, or
negative, or minutes wrong when `tradeledger reconcile` ran on a host whose clock is off, and a
monitor's rule on the metric called a fresh reconciliation stale or a stale one fresh. The jobs'
times (`JobResult.at`, the fill sync's age) are the daemon's own clock, written and read by this
one process. The server is off unless `[health] port` is set; it binds 127.0.0.1
(or ::1) and nothing else.

    [health]
    port = 9464          # 0: any free port (tests); absent: no endpoint
    host = "127.0.0.1"   # loopback only
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.tables import alert_outbox, daemon_heartbeat, daemon_lease, reconciliation, tl_exception
from tradeledger.ledger import db, dbclock
from tradeledger.ledger.store import parse_ts

UTC = dt.timezone.utc
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class HealthConfig:
    port: int | None = None  # None: no endpoint
    host: str = "127.0.0.1"


def parse_health_config(raw: dict) -> HealthConfig:
    table = raw.get("health", {})
    if not isinstance(table, dict):
        raise ConfigError("config: [health] must be a table")
    unknown = sorted(set(table) - {"port", "host"})
    if unknown:
        raise ConfigError(f"config: unknown [health] key {unknown[0]!r} (port, host)")
    port = table.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
        raise ConfigError(f"config: health.port must be a port number, not {port!r}")
    host = str(table.get("host", "127.0.0.1"))
    if host not in LOOPBACK:
        raise ConfigError(f"config: health.host must be a loopback address ({', '.join(LOOPBACK)}), not {host!r}: "
                          "the endpoint is for a monitor on this machine")
    return HealthConfig(port, host)


@dataclass(frozen=True)
class JobState:
    name: str
    ok: bool
    result: str
    at: dt.datetime | None


def assess(now: dt.datetime, lease: dict | None, owner: str | None, heartbeat: dict | None,
           jobs: list[JobState], heartbeat_limit: dt.timedelta, db_now: dt.datetime | None = None) -> list[str]:
    """Why the daemon is not healthy (empty: healthy). Pure. The lease and the heartbeat are judged
    by `db_now`, the database's clock that wrote both (None: `now`)."""
    reasons = []
    if lease is None:
        reasons.append("no daemon holds the lease")
    elif owner is not None and lease["owner"] != owner:
        reasons.append(f"the lease is held by another daemon ({lease['owner']})")
    elif parse_ts(lease["expires_at"]) < (db_now or now):
        reasons.append(f"the lease expired at {lease['expires_at'][:19]} UTC")
    if heartbeat is None:
        reasons.append("no heartbeat")
    else:
        age = (db_now or now) - parse_ts(heartbeat["at"])
        if heartbeat["state"] != "running":
            reasons.append(f"the daemon is {heartbeat['state']}")
        elif age > heartbeat_limit:
            reasons.append(f"the heartbeat is {int(age.total_seconds())} s old")
    reasons += [f"job {j.name} {j.result}" for j in jobs if not j.ok]
    return reasons


def latest_jobs(results) -> list[JobState]:
    """The last result of each job, from the daemon's results (oldest first)."""
    last: dict[str, JobState] = {}
    for r in results:
        last[r.name] = JobState(r.name, r.ok, r.result, getattr(r, "at", None))
    return [last[name] for name in sorted(last)]


class Probe:
    """What the endpoint reads: the database, and the daemon it runs in (if any)."""

    def __init__(self, env: Context, daemon=None, clock=lambda: dt.datetime.now(UTC)):
        self.env, self.daemon, self.clock = env, daemon, clock

    def _rows(self, conn) -> tuple[dict | None, dict | None, dt.datetime]:
        """The lease, the heartbeat, and the database's clock read with the heartbeat (what both the
        lease's expiry and the heartbeat's age are measured by)."""
        name = self.env.settings.env
        lease = conn.execute(sa.select(daemon_lease).where(daemon_lease.c.env == name)).first()
        clock = dbclock.now(conn.dialect.name).label("db_now")
        beat = conn.execute(sa.select(daemon_heartbeat, clock).where(daemon_heartbeat.c.env == name)).first()
        db_now = parse_ts(beat.db_now if beat is not None else dbclock.read(conn))
        heartbeat = None if beat is None else {k: v for k, v in beat._mapping.items() if k != "db_now"}
        return (None if lease is None else dict(lease._mapping)), heartbeat, db_now

    def jobs(self) -> list[JobState]:
        return latest_jobs(list(self.daemon.results)) if self.daemon is not None else []

    def health(self) -> dict:
        now = self.clock()
        with db.read_connection(self.env.engine) as conn:
            lease, beat, db_now = self._rows(conn)
        owner = getattr(self.daemon, "owner", None)
        config = getattr(self.daemon, "config", None)
        limit = dt.timedelta(seconds=3 * (config.heartbeat_seconds if config else 10))
        jobs = self.jobs()
        reasons = assess(now, lease, owner, beat, jobs, limit, db_now)
        return {
            "ok": not reasons, "reasons": reasons, "environment": self.env.settings.env,
            "account": self.env.settings.account, "now": now.isoformat(),
            "lease": None if lease is None else {
                "owner": lease["owner"], "pid": lease["pid"], "host": lease["host"], "expires_at": lease["expires_at"],
                "ours": lease["owner"] == owner,  # by the database's clock, as the lease is judged
                "expires_in_seconds": round((parse_ts(lease["expires_at"]) - db_now).total_seconds(), 3)},
            "heartbeat": None if beat is None else {  # its age by the database's clock, which stamped it
                "at": beat["at"], "age_seconds": round((db_now - parse_ts(beat["at"])).total_seconds(), 3),
                "state": beat["state"], "last_job": beat["last_job"], "last_result": beat["last_result"]},
            "jobs": {j.name: {"ok": j.ok, "result": j.result, "at": j.at.isoformat() if j.at else None} for j in jobs},
        }

    def collect(self):
        """prometheus-client's collector protocol: every metric, read now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = self.clock()
        with db.read_connection(self.env.engine) as conn:
            lease, beat, db_now = self._rows(conn)
            t = tl_exception
            open_rows = conn.execute(sa.select(t.c.kind, t.c.severity, sa.func.count()).where(
                t.c.state.in_(("open", "acknowledged"))).group_by(t.c.kind, t.c.severity)).all()
            r = reconciliation
            # its age: the database's clock that stamped written_at, read in the same query
            recon = conn.execute(sa.select(r.c.clean, r.c.breaks, r.c.written_at,
                                           dbclock.now(conn.dialect.name).label("db_now"))
                                 .order_by(r.c.id.desc()).limit(1)).first()
            bookings = self.env.ledger.entries_by_kind(conn)
            o = alert_outbox
            alerts = dict(conn.execute(sa.select(o.c.state, sa.func.count()).group_by(o.c.state)).all())
        yield GaugeMetricFamily("tradeledger_up", "1 while the health endpoint answers", value=1)
        owner = getattr(self.daemon, "owner", None)
        held = lease is not None and lease["owner"] == owner and parse_ts(lease["expires_at"]) >= db_now
        yield GaugeMetricFamily("tradeledger_lease_held", "1 when this daemon holds the environment's lease",
                                value=1 if held else 0)
        if beat is not None:
            yield GaugeMetricFamily("tradeledger_heartbeat_age_seconds", "Seconds since the daemon's last heartbeat",
                                    value=(db_now - parse_ts(beat["at"])).total_seconds())
        jobs = self.jobs()
        synced = [j.at for j in self._results() if j.name == "fill_sync" and j.ok and j.at is not None]
        if synced:
            yield GaugeMetricFamily("tradeledger_fill_sync_age_seconds", "Seconds since the last successful fill sync",
                                    value=(now - max(synced)).total_seconds())
        success = GaugeMetricFamily("tradeledger_job_last_success", "1 if the job's last run succeeded", labels=["job"])
        ran = GaugeMetricFamily("tradeledger_job_last_run_timestamp_seconds", "When the job last ran", labels=["job"])
        for j in jobs:
            success.add_metric([j.name], 1 if j.ok else 0)
            if j.at is not None:
                ran.add_metric([j.name], j.at.timestamp())
        yield success
        yield ran
        exceptions = GaugeMetricFamily("tradeledger_open_exceptions", "Open or acknowledged exceptions",
                                       labels=["kind", "severity"])
        for kind, severity, count in open_rows:
            exceptions.add_metric([kind, severity], count)
        yield exceptions
        if recon is not None:
            yield GaugeMetricFamily("tradeledger_reconciliation_clean", "1 if the last reconciliation was clean",
                                    value=1 if recon.clean else 0)
            yield GaugeMetricFamily("tradeledger_reconciliation_breaks", "Breaks found by the last reconciliation",
                                    value=recon.breaks)
            if recon.written_at is not None:
                yield GaugeMetricFamily("tradeledger_reconciliation_age_seconds",
                                        "Seconds since the last reconciliation was written (database's clock)",
                                        value=(parse_ts(recon.db_now) - parse_ts(recon.written_at)).total_seconds())
        counts = CounterMetricFamily("tradeledger_bookings", "Ledger entries booked, by kind", labels=["kind"])
        for kind, count in bookings:
            counts.add_metric([kind], count)
        yield counts
        outbox = GaugeMetricFamily("tradeledger_alerts", "Alert outbox rows by state", labels=["state"])
        for state in ("pending", "sent", "failed", "dropped"):
            outbox.add_metric([state], alerts.get(state, 0))
        yield outbox

    def _results(self) -> list[JobState]:
        if self.daemon is None:
            return []
        return [JobState(r.name, r.ok, r.result, getattr(r, "at", None)) for r in list(self.daemon.results)]


class HealthServer:
    """`/health` and `/metrics` over HTTP on a loopback address, served from a background thread."""

    def __init__(self, probe: Probe, host: str = "127.0.0.1", port: int = 0):
        if host not in LOOPBACK:
            raise ConfigError(f"the health endpoint binds loopback only, not {host!r}")
        from prometheus_client import CollectorRegistry

        self.probe = probe
        self.registry = CollectorRegistry()
        self.registry.register(probe)
        self.host, self.requested_port = host, port
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server else self.requested_port

    def start(self) -> int:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    if self.path.split("?")[0] == "/health":
                        report = outer.probe.health()
                        body, status, kind = json.dumps(report).encode(), 200 if report["ok"] else 503, \
                            "application/json"
                    elif self.path.split("?")[0] == "/metrics":
                        body, status, kind = generate_latest(outer.registry), 200, CONTENT_TYPE_LATEST
                    else:
                        body, status, kind = b"not found: /health or /metrics\n", 404, "text/plain"
                except Exception as exc:  # noqa: BLE001 - the database may be down: say so, keep serving
                    body = json.dumps({"ok": False, "reasons": [f"{type(exc).__name__}: {exc}"]}).encode()
                    status, kind = 503, "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # requests are not the daemon log's business
                pass

        family = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            family = V6
        self.server = family((self.host, self.requested_port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="tradeledger-health", daemon=True)
        self.thread.start()
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
