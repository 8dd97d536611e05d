"""The daemon: one scheduler per environment that syncs fills, marks, reconciles, and says it is alive.

Model:
- **One daemon per environment**, enforced by a *lease* row in the environment's own database
  (`daemon_lease`): acquired atomically (insert, or take over a row whose `expires_at` has
  passed), renewed every heartbeat, released on a clean stop. A second daemon is refused with
  who holds the lease and until when; a daemon that died (SIGKILL, power loss) stops holding
  the environment once its lease expires. A daemon that finds its lease taken stops. The
  lease's times are the database's clock (`ledger/dbclock.py`), not the daemon's host's: on
  PostgreSQL two hosts whose clocks differ still agree whether it has expired.
- **Jobs** come from `[daemon]` in config.toml (`daemon_jobs.py`) and are scheduled by
  APScheduler 3 with its job store in the same database (`tl_apscheduler_jobs`): intervals for
  fill sync and reconciliation, daily UTC times for each exchange's settlement, data update and
  target computation. They run one at a time (one worker thread), never overlapping.
- **A failing job** becomes a `job_failed` exception (one per job, deduplicated) and the daemon
  goes on; the job's next success resolves it.
- **Transient failures heal** (`resilience.py`): a locked or unreachable database, terminated
  connections, a dropped broker: every job and every heartbeat is retried with backoff and
  reconnects. A job that still fails raises `job_failed` once for the outage (`job_failed:
  database` when the database was what failed); an outcome the database could not take at the
  time is recorded as soon as it can. The daemon stops only on what cannot heal, saying which:
  its lease taken by another daemon, or a database schema that is not the code's.
- **Heartbeat**: `daemon_heartbeat` holds pid, time, the last job and how it ended, rewritten
  after every job and every lease renewal; `tradeledger status` shows it, `tradeledger monitor`
  and the health endpoint judge how old it is. Its times (`at`, `started_at`) are the database's
  clock, written by the statement itself (`ledger/dbclock.py`), and its age is measured against
  that clock read with it: a monitor on another host whose clock is minutes off neither calls a
  live daemon silent nor misses a dead one. `Daemon.clock` (the daemon's own, injectable) still
  times its jobs' results (the health endpoint's job ages, in the same process) and is never
  compared with another host's.
- **SIGTERM/SIGINT** stop it cleanly: no new job starts, the running one finishes, the
  scheduler shuts down, the lease is released and the heartbeat says `stopped`.
- **Logs** go to `<env>/logs/daemon.log` (rotated); database URLs are logged without passwords.

`run_once` runs every job once in order and reports whether all succeeded (`daemon --once`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.ops import jobs as daemon_jobs
from tradeledger.engine.ops.resilience import Fatal, is_database_failure, is_transient, reason, retrying
from tradeledger.engine.ops.jobs import DaemonConfig, parse_daemon_config
from tradeledger.engine.setup.environment import check_apart
from tradeledger.engine.setup.session import Session
from tradeledger.engine.tables import daemon_heartbeat, daemon_lease
from tradeledger.engine.trading.lease import take_row
from tradeledger.ledger import db, dbclock
from tradeledger.logs import quiet

quiet("apscheduler")  # its log lines stay out of the user's terminal (tradeledger/logs.py)

UTC = dt.timezone.utc
JOBSTORE_TABLE = "tl_apscheduler_jobs"
QUIET_SECONDS = 60  # a database fine for this long ends an outage (its job_failed exception resolves)


class DaemonAlreadyRunning(RuntimeError):
    """Another live daemon holds this environment's lease."""


def wall_now() -> dt.datetime:
    return dt.datetime.now(UTC)


# -- lease and heartbeat (each call one transaction) -------------------------------------------

def acquire_lease(ctx: Context, owner: str, seconds: int, ahead: float = 0) -> None:
    """Take the environment's lease, or take over one expired by the database's clock (the only
    clock every host sharing the database agrees on); refuse a live holder. `ahead`: tests only, as
    if the database's clock were that many seconds later (`lease.take_row`)."""
    engine, env = ctx.engine, ctx.name
    pid, host = os.getpid(), socket.gethostname()
    try:
        row = take_row(engine, daemon_lease, env, owner, dict(pid=pid, host=host), seconds, ahead=ahead)
    except sa.exc.IntegrityError:  # another daemon inserted the row first
        raise DaemonAlreadyRunning(f"another daemon took the {env} environment's lease just now") from None
    if row is not None:
        raise DaemonAlreadyRunning(
            f"a daemon already runs for the {env} environment (pid {row.pid} on {row.host}, lease until "
            f"{row.expires_at[:19]} UTC): stop it first, or wait for its lease to expire")


def renew_lease(ctx: Context, owner: str, seconds: int) -> bool:
    """Extend our lease to `seconds` from now by the database's clock; False when it is no longer
    ours (taken over after it expired)."""
    engine, env = ctx.engine, ctx.name
    with engine.begin() as conn:
        result = conn.execute(daemon_lease.update().where(daemon_lease.c.env == env, daemon_lease.c.owner == owner)
                              .values(expires_at=dbclock.now(conn.dialect.name, seconds)))
        return result.rowcount == 1


def release_lease(ctx: Context, owner: str) -> None:
    engine, env = ctx.engine, ctx.name
    with engine.begin() as conn:
        conn.execute(daemon_lease.delete().where(daemon_lease.c.env == env, daemon_lease.c.owner == owner))


def write_heartbeat(ctx: Context, owner: str, last_job: str | None = None, last_result: str | None = None,
                    state: str = "running", starting: bool = False, ahead: float = 0) -> None:
    """Say the daemon is alive (or `state`), stamped `at` by the database's clock in the statement
    itself, the one clock every host reading it sees; `starting` (the daemon's first beat) sets
    `started_at` by the same clock. `ahead`: tests only, as if the database's clock were that many
    seconds later (negative: a heartbeat written that long ago)."""
    engine, env = ctx.engine, ctx.name
    with engine.begin() as conn:
        at = dbclock.now(conn.dialect.name, ahead)
        values = dict(pid=os.getpid(), owner=owner, at=at, state=state)
        if starting:
            values["started_at"] = at
        if last_job is not None:
            values |= dict(last_job=last_job, last_result=(last_result or "")[:2000])
        if conn.execute(daemon_heartbeat.update().where(daemon_heartbeat.c.env == env).values(**values)).rowcount == 0:
            conn.execute(daemon_heartbeat.insert().values(env=env, **({"started_at": at} | values)))


def read_heartbeat(conn, env: str) -> dict | None:
    row = conn.execute(sa.select(daemon_heartbeat).where(daemon_heartbeat.c.env == env)).first()
    return None if row is None else dict(row._mapping)


# -- logging -------------------------------------------------------------------------------------

class _Redact(logging.Filter):
    """Never log a secret: passwords in URLs and key=value secrets are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = db.mask_secrets(message), ()
        return True


def setup_logging(ctx: Context, config: DaemonConfig) -> logging.Logger:
    path = daemon_jobs.log_path(ctx.dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"tradeledger.daemon.{ctx.settings.env}")
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
    at: dt.datetime | None = None  # when it ended (the health endpoint's ages)


@dataclass
class Daemon:
    env: Context
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
        self.results: list[JobResult] = []
        self._job_lock = threading.Lock()
        self._outbox: list = []  # exception changes the database could not take yet, in order
        self._outbox_lock = threading.Lock()
        self.stopped_because: str | None = None  # what could not heal, when the daemon stopped on it
        self._fatal: str | None = None  # the same, found by a scheduled job
        self._db_trouble_at = 0.0  # time.monotonic() of the last database failure met
        self._db_open = self._db_raise_queued = False  # the outage's exception: raised / not yet written

    @property
    def name(self) -> str:
        return self.env.settings.env

    def stamp(self) -> dt.datetime:
        """When something the daemon records happened: the environment's clock (the simulated
        exchange's on sim), like every other record of the environment. `clock` (the wall clock)
        stays the daemon's own time, for what only this process compares (when its jobs ended: the
        health endpoint's job ages). Its lease and heartbeat are the database's clock
        (`acquire_lease`, `write_heartbeat`), which every host sharing the database sees."""
        from tradeledger.engine.trust.snapshots import session_now

        return session_now(self.session)

    def _retrying(self, call, what: str, budget: float | None = None):
        return retrying(call, engine=self.env.engine, log=self.log, what=what, stop_event=self.stop_event,
                        budget_seconds=self.config.retry_seconds if budget is None else budget,
                        on_retry=lambda exc: self._database_trouble(what, exc, "warning"))

    def _database_trouble(self, what: str, exc: BaseException, severity: str) -> None:
        """A database failure met (healed by a retry: warning; a job failed on it: error): one
        `job_failed: database` exception per outage, resolved once the database has been quiet."""
        if not is_database_failure(exc):
            return
        self._db_trouble_at = time.monotonic()
        if self._db_raise_queued and severity == "warning":
            return  # already on its way to the database; the outage is one exception
        self._db_raise_queued, self._db_open = True, True
        detail, now = f"{what}: {reason(exc)}", self.stamp()

        def raise_it(ex, conn):
            ex.raise_exception(conn, ex.ExceptionKind.JOB_FAILED, "database", detail, severity=severity,
                               dedupe_key=ex.dedupe_key(ex.ExceptionKind.JOB_FAILED, "database"), now=now)
            self._db_raise_queued = False

        with self._outbox_lock:
            self._outbox.append(raise_it)

    def _database_quiet(self) -> None:
        """Resolve the outage's exception once the database has been fine for a while (a minute,
        or `retry_seconds` if longer): blips seconds apart are one outage, not several."""
        quiet = max(QUIET_SECONDS, self.config.retry_seconds)
        if not self._db_open or time.monotonic() - self._db_trouble_at < quiet:
            return
        self._db_open, now = False, self.stamp()
        self._record(lambda ex, conn: ex.resolve_by_key(
            conn, ex.dedupe_key(ex.ExceptionKind.JOB_FAILED, "database"), "daemon", "the database has answered again",
            now=now))

    def acquire(self) -> None:
        self._retrying(lambda: acquire_lease(self.env, self.owner, self.config.lease_seconds), "taking the lease")
        self._retrying(lambda: write_heartbeat(self.env, self.owner, starting=True), "heartbeat")
        safe_url = self.env.engine.url.render_as_string(hide_password=True)
        self.log.info("daemon started for %s (account %s, database %s), lease %s",
                      self.name, self.env.settings.account, safe_url, self.owner)

    def release(self) -> None:
        try:
            self._flush_outbox()
            write_heartbeat(self.env, self.owner, state="stopped")
            release_lease(self.env, self.owner)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            self.log.error("could not release the lease (it expires by itself): %s", reason(exc))
        finally:
            self.session.close()
            self.log.info("daemon stopped, lease released")

    def run_job(self, name: str) -> JobResult:
        """Run one job, retrying transient failures; a failure is logged and becomes a job_failed
        exception, never raised (except what cannot heal: `Fatal`, which stops the daemon)."""
        with self._job_lock:
            from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key

            key = dedupe_key(ExceptionKind.JOB_FAILED, name)
            try:
                text = self._retrying(lambda: self._attempt(name), f"job {name}")
                result, now = JobResult(name, True, "ok: " + text), self.stamp()
                self._record(lambda ex, conn: ex.resolve_by_key(conn, key, "daemon", "the job succeeded again",
                                                                now=now))
                self._database_quiet()
                self.log.info("job %s %s", name, result.result)
            except Fatal:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of a job is reported, never fatal
                detail = reason(exc) if is_transient(exc) else f"{type(exc).__name__}: {exc}"
                result = JobResult(name, False, "failed: " + detail)
                self.log.error("job %s failed: %s", name, detail)
                if is_database_failure(exc):
                    self._database_trouble(f"job {name} failed", exc, "error")
                    self._flush_outbox()
                else:
                    now = self.stamp()
                    self._record(lambda ex, conn: ex.raise_exception(
                        conn, ExceptionKind.JOB_FAILED, name, detail, severity="error", dedupe_key=key, now=now))
            result.at = self.clock()
            self.results.append(result)
            del self.results[:-100]
            try:
                self._retrying(lambda: write_heartbeat(self.env, self.owner, name, result.result), "heartbeat",
                               budget=self.config.heartbeat_seconds)
            except Exception as exc:  # noqa: BLE001 - the heartbeat loop writes it again
                self.log.warning("heartbeat after job %s not written: %s", name, reason(exc))
            return result

    def _attempt(self, name: str) -> str:
        try:
            return daemon_jobs.run(self.session, self.config, name)
        except Exception as exc:
            self._reconnect_after(exc)
            raise

    def _record(self, action) -> None:
        """Apply an exception change (raise or resolve) now, or as soon as the database takes it."""
        with self._outbox_lock:
            self._outbox.append(action)
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        from tradeledger.engine.trust import exceptions

        with self._outbox_lock:
            while self._outbox:
                try:
                    with self.env.engine.begin() as conn:
                        self._outbox[0](exceptions, conn)
                except Exception as exc:  # noqa: BLE001 - the database may be what failed; keep going
                    if is_transient(exc):
                        self.log.warning("exception record waits for the database: %s", reason(exc))
                        return
                    self.log.error("could not record the job's outcome as an exception: %s", exc)
                self._outbox.pop(0)

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

        scheduler = _resilient_scheduler(
            self.log, jobstores={"default": SQLAlchemyJobStore(engine=self.env.engine, tablename=JOBSTORE_TABLE)},
            executors={"default": ThreadPoolExecutor(max_workers=1)}, jobstore_retry_interval=5,
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
        triggers["verify"] = daily(c.verify_time)
        if c.data_csv or c.data_fetch:
            triggers["data_update"] = daily(c.data_time)
        if c.targets_time:
            triggers["targets"] = daily(c.targets_time)
        if c.backup_time:
            triggers["backup"] = daily(c.backup_time)
        if c.alerts_seconds:
            triggers["alerts"] = IntervalTrigger(seconds=c.alerts_seconds, timezone=UTC)
        return triggers

    def serve(self, install_signals: bool = True) -> None:
        """Run the schedule until SIGTERM/SIGINT (or `stop_event`), renewing the lease."""
        global _RUNNING
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        scheduler = self.scheduler()
        health = self.health_server()
        _RUNNING[self.name] = self
        scheduler.start()
        wanted = {f"{self.name}:{name}" for name in self.triggers()}
        for job in scheduler.get_jobs():  # jobs a former config scheduled, left in the store
            if job.id.startswith(f"{self.name}:") and job.id not in wanted:
                scheduler.remove_job(job.id)
        self.log.info("scheduled: %s", ", ".join(sorted(self.triggers())))
        try:
            while not self.stop_event.wait(self.config.heartbeat_seconds):
                try:
                    self._retrying(self.beat, "heartbeat", budget=self.config.lease_seconds / 2)
                except Fatal:
                    raise
                except Exception as exc:  # noqa: BLE001 - transient beyond the budget: next beat
                    self.log.error("heartbeat failed, trying again: %s", reason(exc))
        except Fatal as exc:
            self.stopped_because = str(exc)
            self.log.error("stopping: %s", exc)
        finally:
            self.log.info("stopping: waiting for the running job to finish")
            scheduler.shutdown(wait=True)
            _RUNNING.pop(self.name, None)
            if health is not None:
                health.stop()
        if self.stopped_because is None and self._fatal is not None:
            self.stopped_because = self._fatal

    def health_server(self):
        """The loopback health endpoint when `[health] port` is set (engine/ops/health.py), started."""
        from tradeledger.engine.ops.health import HealthServer, Probe, parse_health_config

        config = parse_health_config(self.env.settings.raw)
        if config.port is None:
            return None
        self.health = HealthServer(Probe(self.env, self), config.host, config.port)
        self.log.info("health endpoint on http://%s:%d/health and /metrics", config.host, self.health.start())
        return self.health

    def beat(self) -> None:
        """Renew the lease, check the schema, write the heartbeat, record what waited: one beat."""
        if not renew_lease(self.env, self.owner, self.config.lease_seconds):
            raise Fatal("the lease was lost to another daemon (this one was cut off longer than "
                        f"lease_seconds = {self.config.lease_seconds}): stopping so that only one runs")
        try:
            db.check_schema(self.env.engine)
        except db.DatabaseError as exc:
            raise Fatal(f"the database schema changed under the daemon: {exc}") from None
        write_heartbeat(self.env, self.owner)
        self._flush_outbox()
        self._database_quiet()


def _resilient_scheduler(log: logging.Logger, **kwargs):
    """APScheduler's background scheduler, made to survive its job store's database failing.

    APScheduler 3 retries a failed `get_due_jobs`, but an error while it updates a job's next
    run time escapes its loop and ends its thread: jobs silently stop while the heartbeat goes
    on. Here a failed pass is logged and tried again after `jobstore_retry_interval`."""
    from apscheduler.schedulers.background import BackgroundScheduler

    class Scheduler(BackgroundScheduler):
        def _process_jobs(self):
            try:
                return super()._process_jobs()
            except Exception as exc:  # noqa: BLE001 - the job store's database failed: try again
                log.warning("scheduler: %s; trying again in %d s", reason(exc), self.jobstore_retry_interval)
                return self.jobstore_retry_interval

    return Scheduler(**kwargs)


_RUNNING: dict[str, Daemon] = {}


def scheduled_job(env_name: str, job: str) -> None:
    """The job store's entry point (a textual reference survives restarts)."""
    daemon = _RUNNING.get(env_name)
    if daemon is None or daemon.stop_event.is_set():
        return  # fired after a stop request, or by a process that is not this environment's daemon
    try:
        daemon.run_job(job)
    except Fatal as exc:
        daemon._fatal = str(exc)
        daemon.log.error("stopping: %s", exc)
        daemon.stop_event.set()
