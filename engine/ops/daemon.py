"""The daemon: one scheduler per environment that syncs fills, marks, reconciles, and says it is alive.

Model:
- **One daemon per environment**, enforced by a *lease* row in the environment's own database
  (`daemon_lease`): acquired atomically (insert, or take over a row whose `expires_at` has
  passed), renewed every heartbeat, released on a clean stop. A second daemon is refused with
  who holds the lease and until when; a daemon that died (SIGKILL, power loss) stops holding
  the environment once its lease expires. A daemon that finds its lease taken stops.
- **Jobs** come from `[daemon]` in config.toml (`daemon_jobs.py`) and are scheduled by
  APScheduler 3 with its job store in the same database (`tl_apscheduler_jobs`): intervals for
  fill sync and reconciliation, daily UTC times for each exchange's settlement, data update and
  target computation. They run one at a time (one worker thread), never overlapping.
- **A failing job** becomes a `job_failed` exception (one per job, deduplicated) and the daemon
  goes on; the job's next success resolves it.
- **Heartbeat**: `daemon_heartbeat` holds pid, time, the last job and how it ended, rewritten
  after every job and every lease renewal; `tradeledger status` reads it.
- **SIGTERM/SIGINT** stop it cleanly: no new job starts, the running one finishes, the
  scheduler shuts down, the lease is released and the heartbeat says `stopped`.
- **Logs** go to `<env>/logs/daemon.log` (rotated); database URLs are logged without passwords.

`run_once` runs every job once in order and reports whether all succeeded (`daemon --once`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler

import sqlalchemy as sa

from tradeledger.engine.ops import jobs as daemon_jobs
from tradeledger.engine.ops.jobs import DaemonConfig, parse_daemon_config
from tradeledger.engine.setup.environment import Environment, check_apart
from tradeledger.engine.setup.session import Session
from tradeledger.engine.tables import daemon_heartbeat, daemon_lease
from tradeledger.ledger.store import fmt_ts

UTC = dt.timezone.utc
JOBSTORE_TABLE = "tl_apscheduler_jobs"
_SECRET = re.compile(r"(://[^:/@\s]+:)[^@\s]+@|((?:password|passwd|secret|token)\s*[=:]\s*)\S+", re.I)


class DaemonAlreadyRunning(RuntimeError):
    """Another live daemon holds this environment's lease."""


def wall_now() -> dt.datetime:
    return dt.datetime.now(UTC)


# -- lease and heartbeat (each call one transaction) -------------------------------------------

def acquire_lease(engine, env: str, owner: str, now: dt.datetime, seconds: int) -> None:
    """Take the environment's lease, or take over an expired one; refuse a live holder."""
    expires = fmt_ts(now + dt.timedelta(seconds=seconds))
    pid, host = os.getpid(), socket.gethostname()
    try:
        with engine.begin() as conn:
            query = sa.select(daemon_lease).where(daemon_lease.c.env == env)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                conn.execute(daemon_lease.insert().values(env=env, owner=owner, pid=pid, host=host,
                                                          acquired_at=fmt_ts(now), expires_at=expires))
                return
            if row.owner != owner and row.expires_at > fmt_ts(now):
                raise DaemonAlreadyRunning(
                    f"a daemon already runs for the {env} environment (pid {row.pid} on {row.host}, lease until "
                    f"{row.expires_at[:19]} UTC): stop it first, or wait for its lease to expire")
            conn.execute(daemon_lease.update().where(daemon_lease.c.env == env, daemon_lease.c.owner == row.owner)
                         .values(owner=owner, pid=pid, host=host, acquired_at=fmt_ts(now), expires_at=expires))
    except sa.exc.IntegrityError:  # another daemon inserted the row first
        raise DaemonAlreadyRunning(f"another daemon took the {env} environment's lease just now") from None


def renew_lease(engine, env: str, owner: str, now: dt.datetime, seconds: int) -> bool:
    """Extend our lease; False when it is no longer ours (taken over after it expired)."""
    with engine.begin() as conn:
        result = conn.execute(daemon_lease.update().where(daemon_lease.c.env == env, daemon_lease.c.owner == owner)
                              .values(expires_at=fmt_ts(now + dt.timedelta(seconds=seconds))))
        return result.rowcount == 1


def release_lease(engine, env: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(daemon_lease.delete().where(daemon_lease.c.env == env, daemon_lease.c.owner == owner))


def write_heartbeat(engine, env: str, owner: str, started: dt.datetime, now: dt.datetime,
                    last_job: str | None = None, last_result: str | None = None, state: str = "running") -> None:
    values = dict(pid=os.getpid(), owner=owner, started_at=fmt_ts(started), at=fmt_ts(now), state=state)
    if last_job is not None:
        values |= dict(last_job=last_job, last_result=(last_result or "")[:2000])
    with engine.begin() as conn:
        if conn.execute(daemon_heartbeat.update().where(daemon_heartbeat.c.env == env).values(**values)).rowcount == 0:
            conn.execute(daemon_heartbeat.insert().values(env=env, **values))


def read_heartbeat(conn, env: str) -> dict | None:
    row = conn.execute(sa.select(daemon_heartbeat).where(daemon_heartbeat.c.env == env)).first()
    return None if row is None else dict(row._mapping)


# -- logging -------------------------------------------------------------------------------------

class _Redact(logging.Filter):
    """Never log a secret: passwords in URLs and key=value secrets are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***" +
                                              ("@" if m.group(1) else ""), message), ()
        return True


def setup_logging(env: Environment, config: DaemonConfig) -> logging.Logger:
    path = daemon_jobs.log_path(env.dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"tradeledger.daemon.{env.settings.env}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    target = os.path.abspath(path)
    aps = logging.getLogger("apscheduler")
    aps.setLevel(logging.WARNING)
    mine = None
    for h in list(logger.handlers):  # another environment's file (an earlier daemon in this process)
        if isinstance(h, RotatingFileHandler):
            if h.baseFilename == target and mine is None:
                mine = h
                continue
            logger.removeHandler(h)
            aps.removeHandler(h)
            h.close()
    if mine is None:  # whatever other handlers are attached (a test's capture), ours is the file
        mine = RotatingFileHandler(target, maxBytes=config.log_max_bytes, backupCount=config.log_backups,
                                   encoding="utf-8")
        mine.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
        mine.addFilter(_Redact())
        logger.addHandler(mine)
    if mine not in aps.handlers:
        aps.addHandler(mine)
    return logger


# -- the daemon ----------------------------------------------------------------------------------

@dataclass
class JobResult:
    name: str
    ok: bool
    result: str


@dataclass
class Daemon:
    env: Environment
    config: DaemonConfig = None  # type: ignore[assignment]
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    clock: object = wall_now
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        if self.config is None:
            self.config = parse_daemon_config(self.env.settings.raw)
        check_apart(self.env.home, self.env.settings.env, self.env.settings)  # no shared log file or client id
        self.session = Session(self.env)
        self.log = setup_logging(self.env, self.config)
        self.started = self.clock()
        self.results: list[JobResult] = []
        self._job_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.env.settings.env

    def acquire(self) -> None:
        acquire_lease(self.env.engine, self.name, self.owner, self.clock(), self.config.lease_seconds)
        write_heartbeat(self.env.engine, self.name, self.owner, self.started, self.clock())
        safe_url = self.env.engine.url.render_as_string(hide_password=True)
        self.log.info("daemon started for %s (account %s, database %s), lease %s",
                      self.name, self.env.settings.account, safe_url, self.owner)

    def release(self) -> None:
        try:
            write_heartbeat(self.env.engine, self.name, self.owner, self.started, self.clock(), state="stopped")
        finally:
            release_lease(self.env.engine, self.name, self.owner)
            self.session.close()
            self.log.info("daemon stopped, lease released")

    def run_job(self, name: str) -> JobResult:
        """Run one job; a failure is logged and becomes a job_failed exception, never raised."""
        with self._job_lock:
            key = f"job_failed:{name}"
            try:
                result = JobResult(name, True, "ok: " + daemon_jobs.run(self.session, self.config, name))
                self._exceptions(lambda ex, conn: ex.resolve_by_key(conn, key, "daemon", "the job succeeded again"))
                self.log.info("job %s %s", name, result.result)
            except Exception as exc:  # noqa: BLE001 - any failure of a job is reported, never fatal
                detail = f"{type(exc).__name__}: {exc}"
                result = JobResult(name, False, "failed: " + detail)
                self.log.error("job %s failed: %s", name, detail)
                self._reconnect_after(exc)
                self._exceptions(lambda ex, conn: ex.raise_exception(
                    conn, "job_failed", name, detail, severity="error", dedupe_key=key, now=wall_now()))
            self.results.append(result)
            del self.results[:-100]
            write_heartbeat(self.env.engine, self.name, self.owner, self.started, self.clock(), name, result.result)
            return result

    def _exceptions(self, action) -> None:
        try:
            from tradeledger.engine.trust import exceptions
        except ImportError:  # pragma: no cover - exceptions arrive with reconciliation
            return
        try:
            with self.env.engine.begin() as conn:
                action(exceptions, conn)
        except Exception as exc:  # noqa: BLE001 - the database may be what failed; keep going
            self.log.error("could not record the job's outcome as an exception: %s", exc)

    def _reconnect_after(self, exc: Exception) -> None:
        from tradeledger.broker.base import BrokerDisconnected

        if isinstance(exc, BrokerDisconnected) and "broker" in self.session.__dict__:
            self.session.close()
            del self.session.__dict__["broker"]  # the next job connects again

    def run_once(self) -> bool:
        """Every job once, in order; True when all succeeded."""
        return all([self.run_job(name).ok for name in self.config.job_names()])

    # -- scheduled service --

    def scheduler(self):
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.env.engine, tablename=JOBSTORE_TABLE)},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}, timezone=UTC)
        for name, trigger in self.triggers().items():
            scheduler.add_job("tradeledger.engine.ops.daemon:scheduled_job", trigger=trigger, args=[self.name, name],
                              id=f"{self.name}:{name}", name=name, replace_existing=True)
        return scheduler

    def triggers(self) -> dict:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        c = self.config

        def daily(t: dt.time):
            return CronTrigger(hour=t.hour, minute=t.minute, timezone=UTC)

        triggers = {"fill_sync": IntervalTrigger(seconds=c.fill_sync_seconds, timezone=UTC),
                    "reconcile": IntervalTrigger(seconds=c.reconcile_seconds, timezone=UTC),
                    "monitor": IntervalTrigger(seconds=c.reconcile_seconds, timezone=UTC)}
        triggers |= {f"settle:{x}": daily(t) for x, t in c.settlement_times.items()}
        if c.data_csv:
            triggers["data_update"] = daily(c.data_time)
        if c.targets_time:
            triggers["targets"] = daily(c.targets_time)
        return triggers

    def serve(self, install_signals: bool = True) -> None:
        """Run the schedule until SIGTERM/SIGINT (or `stop_event`), renewing the lease."""
        global _RUNNING
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        scheduler = self.scheduler()
        _RUNNING[self.name] = self
        scheduler.start()
        wanted = {f"{self.name}:{name}" for name in self.triggers()}
        for job in scheduler.get_jobs():  # jobs a former config scheduled, left in the store
            if job.id.startswith(f"{self.name}:") and job.id not in wanted:
                scheduler.remove_job(job.id)
        self.log.info("scheduled: %s", ", ".join(sorted(self.triggers())))
        try:
            while not self.stop_event.wait(self.config.heartbeat_seconds):
                if not renew_lease(self.env.engine, self.name, self.owner, self.clock(), self.config.lease_seconds):
                    self.log.error("lease lost to another daemon: stopping")
                    break
                write_heartbeat(self.env.engine, self.name, self.owner, self.started, self.clock())
        finally:
            self.log.info("stopping: waiting for the running job to finish")
            scheduler.shutdown(wait=True)
            _RUNNING.pop(self.name, None)


_RUNNING: dict[str, Daemon] = {}


def scheduled_job(env_name: str, job: str) -> None:
    """The job store's entry point (a textual reference survives restarts)."""
    daemon = _RUNNING.get(env_name)
    if daemon is None or daemon.stop_event.is_set():
        return  # fired after a stop request, or by a process that is not this environment's daemon
    daemon.run_job(job)
