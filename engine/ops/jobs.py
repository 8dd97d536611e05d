"""What the daemon runs: its configuration (`[daemon]` in config.toml) and one function per job.

    [daemon]
    fill_sync_seconds = 60            # book new executions and late commissions
    reconcile_seconds = 300           # broker snapshot vs ledger (engine/reconcile.py), then monitoring
    settlement_times = {CME = "21:00", EUREX = "16:45"}   # UTC; default: every exchange of a configured
                                      # future at its known time (EXCHANGE_SETTLEMENT)
    data_csv = "prices.csv"           # optional: re-import this CSV (relative to the env dir) ...
    data_fetch = true                 # optional: fetch daily bars per contract from the broker ...
    data_fetch_days = 5               # ... this many days back (`tradeledger data fetch`)
    data_time = "21:30"               # ... daily at this UTC time (either needs it)
    targets_time = "22:00"            # optional: compute (never approve) a target run daily
    lease_seconds = 60                # how long a dead daemon keeps the environment
    heartbeat_seconds = 10
    retry_seconds = 120               # how long a job retries a busy or lost database or broker
    verify_time = "03:30"             # UTC, daily: `tradeledger db verify` (integrity, balances, links)
    log_file = "logs/daemon.log"      # relative to the env dir
    log_max_bytes = 5000000
    log_backups = 5

Two more jobs come from their own tables: `backup` daily at `[backup] daily` (engine/ops/backup.py;
scheduled only, never part of `--once`), and `alerts` every `[alerts] every_seconds` when channels
are configured (engine/ops/alerts.py; sending never fails the job, a channel that is down waits).

Every job is a function of the daemon's `Session` returning a one-line result; it raises when it
fails, and the daemon turns that into a `job_failed` exception and goes on. None of them sends an
order: the daemon only books what happened, marks, reconciles and prepares runs for review.
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from tradeledger.engine.ops.alerts import parse_alert_config
from tradeledger.engine.ops.backup import parse_backup_config
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.setup.session import Session

# When each exchange's daily settlement is known (UTC), for every exchange of a configured future
# that `[daemon] settlement_times` does not name: the CME group settles around 14:00-15:00 Chicago
# time, Eurex at 17:30 Frankfurt, ICE Futures Europe around 17:30 London (winter times, UTC below).
EXCHANGE_SETTLEMENT = {"CME": "21:00", "CBOT": "21:00", "NYMEX": "21:00", "COMEX": "21:00", "GLOBEX": "21:00",
                       "CFE": "21:00", "EUREX": "16:45", "ICEEU": "17:45", "ICEUS": "21:00", "ICE": "17:45"}
FALLBACK_SETTLEMENT = "21:00"


@dataclass(frozen=True)
class DaemonConfig:
    fill_sync_seconds: int = 60
    reconcile_seconds: int = 300
    settlement_times: dict = field(default_factory=dict)  # exchange -> dt.time (UTC)
    data_csv: str | None = None
    data_fetch: bool = False
    data_fetch_days: int = 5
    data_time: dt.time | None = None
    targets_time: dt.time | None = None
    lease_seconds: int = 60
    heartbeat_seconds: int = 10
    retry_seconds: int = 120
    verify_time: dt.time = dt.time(3, 30, tzinfo=dt.timezone.utc)
    log_file: str = "logs/daemon.log"
    log_max_bytes: int = 5_000_000
    log_backups: int = 5
    backup_time: dt.time | None = None  # [backup] daily (engine/ops/backup.py)
    alerts_seconds: int | None = None  # [alerts] every_seconds, when channels are configured (alerts.py)

    def job_names(self) -> list[str]:
        """Every job, in the order `--once` runs them: data first, targets, then alerts.

        The daily backup is scheduled only: a `--once` run from cron would otherwise take one each time."""
        names = ["data_update"] if self.data_csv or self.data_fetch else []
        names += ["fill_sync"] + [f"settle:{x}" for x in sorted(self.settlement_times)] + ["reconcile", "monitor"]
        return names + (["targets"] if self.targets_time else []) + (["alerts"] if self.alerts_seconds else [])


def _time(where: str, text) -> dt.time:
    try:
        hour, minute = str(text).split(":")
        return dt.time(int(hour), int(minute), tzinfo=dt.timezone.utc)
    except ValueError:
        raise ConfigError(f"config: daemon.{where} must be a UTC time HH:MM, not {text!r}") from None


def _positive_int(raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"config: daemon.{key} must be a positive whole number, not {value!r}")
    return value


def parse_daemon_config(raw: dict) -> DaemonConfig:
    """The [daemon] table, validated (pure)."""
    d = raw.get("daemon", {})
    if not isinstance(d, dict):
        raise ConfigError("config: [daemon] must be a table")
    known = {"fill_sync_seconds", "reconcile_seconds", "settlement_times", "data_csv", "data_fetch", "data_fetch_days",
             "data_time", "targets_time",
             "lease_seconds", "heartbeat_seconds", "retry_seconds", "verify_time", "log_file", "log_max_bytes", "log_backups"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"config: unknown [daemon] key {unknown[0]!r}")
    alerts = parse_alert_config(raw)
    times = d.get("settlement_times", {})
    if not isinstance(times, dict):
        raise ConfigError("config: daemon.settlement_times must be a table like {CME = \"21:00\"}")
    # every exchange of a configured future is settled, by its known time unless the config names one
    exchanges = {str(i.get("exchange", "")) for i in raw.get("instruments", {}).values()
                 if isinstance(i, dict) and i.get("type") == "future" and i.get("exchange")}
    times = {**{x: EXCHANGE_SETTLEMENT.get(x.upper(), FALLBACK_SETTLEMENT) for x in exchanges}, **times}
    if d.get("data_csv") is not None and d.get("data_time") is None:
        raise ConfigError("config: daemon.data_csv needs daemon.data_time")
    fetch = d.get("data_fetch", False)
    if not isinstance(fetch, bool):
        raise ConfigError(f"config: daemon.data_fetch must be true or false, not {fetch!r}")
    if fetch and d.get("data_time") is None:
        raise ConfigError("config: daemon.data_fetch needs daemon.data_time")
    lease = _positive_int(d, "lease_seconds", 60)
    heartbeat = _positive_int(d, "heartbeat_seconds", 10)
    if heartbeat * 2 > lease:
        raise ConfigError("config: daemon.heartbeat_seconds must be at most half of daemon.lease_seconds")
    return DaemonConfig(
        fill_sync_seconds=_positive_int(d, "fill_sync_seconds", 60),
        reconcile_seconds=_positive_int(d, "reconcile_seconds", 300),
        settlement_times={str(k): _time(f"settlement_times.{k}", v) for k, v in times.items()},
        data_csv=d.get("data_csv"), data_fetch=fetch, data_fetch_days=_positive_int(d, "data_fetch_days", 5),
        data_time=_time("data_time", d["data_time"]) if d.get("data_time") else None,
        targets_time=_time("targets_time", d["targets_time"]) if d.get("targets_time") else None,
        lease_seconds=lease, heartbeat_seconds=heartbeat, retry_seconds=_positive_int(d, "retry_seconds", 120),
        verify_time=_time("verify_time", d.get("verify_time", "03:30")),
        log_file=str(d.get("log_file", "logs/daemon.log")),
        log_max_bytes=_positive_int(d, "log_max_bytes", 5_000_000), log_backups=_positive_int(d, "log_backups", 5),
        backup_time=parse_backup_config(raw).daily, alerts_seconds=alerts.every_seconds if alerts.urls else None,
    )


def log_path(env_dir: Path, config: DaemonConfig) -> Path:
    path = Path(config.log_file).expanduser()
    return (path if path.is_absolute() else env_dir / path).resolve()


# -- the jobs ----------------------------------------------------------------------------------

def fill_sync(session: Session) -> str:
    from tradeledger.engine.futures.interrupted import check_spreads
    from tradeledger.engine.trading.fills import sync_fills

    report = sync_fills(session, session.broker)
    interrupted = check_spreads(session, session.broker, session.now())  # each raised as interrupted_roll
    return (f"{len(report.booked)} fills booked, {len(report.commissions)} late commissions, {report.replays} "
            f"replays, {len(report.unattributed)} unattributed, {len(report.pending_commissions)} pending"
            + "".join(f"; interrupted roll: {line}" for line in interrupted))


def settle(session: Session, exchange: str) -> str:
    """Mark today's settlement (session clock) of the futures held on one exchange."""
    from tradeledger.engine.setup.config import instrument_of_contract
    from tradeledger.engine.accounting.holdings import known_contracts
    from tradeledger.engine.trading.marking import futures_held, mark_day, settlement_prices

    env, config = session, session.config
    now = session.now()
    contracts = known_contracts(env.ledger)
    held = futures_held(env)

    def exchange_of(code: str) -> str:
        instrument = instrument_of_contract(config, code)
        return instrument.exchange if instrument is not None else ""

    mine = [c for c in held if exchange_of(c) == exchange]
    if not mine:
        return f"no {exchange} futures held"
    prices = {c: p for c, p in settlement_prices(env, now.date()).items() if c in mine}
    # mark_day walks every held future: the other exchanges' come back as "missing", ignored here.
    booked, missing, _later = mark_day(env, {c: contracts[c] for c in mine}, now.date(),
                                       prices, now)  # marked at `now`: nothing can have moved later
    missing = [c for c in missing if c in mine]
    from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception, resolve_by_key

    key = dedupe_key(ExceptionKind.STALE_PRICES, "settlement", exchange, now.date())
    with env.engine.begin() as conn:
        if missing:  # stays open until the day is marked here, or a person resolves it (not monitoring)
            raise_exception(conn, ExceptionKind.STALE_PRICES, f"settlement {exchange} {now.date()}",
                            f"no settlement price on {now.date()} for {', '.join(missing)}",
                            severity="warning", dedupe_key=key, now=now)
        else:
            resolve_by_key(conn, key, "daemon", "the day's settlement is marked", now=now)
    return f"{len(booked)} settled" + (f"; no price for {', '.join(missing)}" if missing else "")


def reconcile(session: Session) -> str:
    """Snapshot, book, compare (engine/reconcile.py); skipped with a note where it is not present."""
    try:
        module = importlib.import_module("tradeledger.engine.trust.reconcile")
    except ImportError:
        return "skipped: reconciliation is not available in this version"
    result = module.reconcile_session(session, who="daemon")
    clean = getattr(result, "clean", None)
    breaks = getattr(result, "breaks", ())
    return f"clean={clean}" + (f", {len(breaks)} breaks" if breaks else "")


def monitor(session: Session) -> str:
    """Overdue commissions, stuck orders, missing FX, stale prices, a silent daemon (engine/monitor.py)."""
    from tradeledger.engine.trust.monitor import check

    found = check(session, who="daemon")
    return f"{len(found)} findings" + (": " + ", ".join(sorted({f.kind for f in found})) if found else "")


def data_update(session: Session, csv: str | None, fetch: bool = False, days: int = 5) -> str:
    """Prices for the day: the broker's daily bars per contract (and contract dates) when
    `fetch`, then the CSV when one is configured."""
    from tradeledger.engine.futures.fetch import fetch_bars
    from tradeledger.engine.targets.prices import import_prices_csv

    done = []
    if fetch:
        done.append(f"fetched {fetch_bars(session, days=days)}")
    if csv:
        path = Path(csv).expanduser()
        path = path if path.is_absolute() else session.dir / path
        report = import_prices_csv(session, path, replace=True)
        done.append(f"imported {path.name}: {report}")
    return "; ".join(done)


def targets(session: Session) -> str:
    """Compute a run for review. Nobody watches the daemon, so the run it supersedes (pending review,
    or approved and not executed) is said in the result and logged as a warning, and an approval it
    discards is raised as `approval_discarded` with the run (engine/targets/runs.py)."""
    import logging

    from tradeledger.engine.targets.runs import compute_run, superseded_by_run

    now = session.now()
    run_id = compute_run(session, now.date(), now, unattended=True)
    text = f"target run {run_id} computed, pending review"
    before = superseded_by_run(session, run_id)
    if before is not None:
        said = before.describe() + ("; its approval is discarded: raised as approval_discarded"
                                    if before.discards_approval else "")
        logging.getLogger(f"tradeledger.daemon.{session.settings.env}").warning("targets: %s", said)
        text += f"; {said}"
    return text


def verify(session: Session) -> str:
    """The database verified (ledger/verify.py): a finding fails the job, so it is raised."""
    from tradeledger.engine.accounting.holdings import verify_books

    result = verify_books(session.ledger, session.chart)
    if not result.ok:
        shown = "; ".join(f"{f.check}: {f.detail}" for f in result.findings[:3])
        raise RuntimeError(f"the database fails verification ({len(result.findings)} findings): {shown}; "
                           "run `tradeledger db verify`")
    return f"verified {result.entries} entries, {result.postings} postings"


BOOKING_JOBS = ("fill_sync", "reconcile", "data_update")  # and every settle:<exchange>


def run(session: Session, config: DaemonConfig, name: str) -> str:
    """Run one job; after a job that books (or brings prices), rewrite the beancount export so an
    open Fava shows it (Fava reloads the file when it changes; the write is atomic)."""
    books = name in BOOKING_JOBS or name.startswith("settle:")
    before = session.ledger.count() if books else None
    result = _run(session, config, name)
    if books and (name in ("data_update",) or name.startswith("settle:") or session.ledger.count() != before
                  or not session.ledger_path.exists()):
        from tradeledger.engine.accounting.export import export_ledger

        export_ledger(session, session.config)
        result += "; export rewritten"
    return result


def _run(session: Session, config: DaemonConfig, name: str) -> str:
    if name == "verify":
        return verify(session)
    if name == "fill_sync":
        return fill_sync(session)
    if name == "reconcile":
        return reconcile(session)
    if name == "monitor":
        return monitor(session)
    if name.startswith("settle:"):
        return settle(session, name.partition(":")[2])
    if name == "data_update":
        return data_update(session, config.data_csv, config.data_fetch, config.data_fetch_days)
    if name == "targets":
        return targets(session)
    if name == "backup":
        from tradeledger.engine.ops.backup import daily_backup

        return daily_backup(session)
    if name == "alerts":
        from tradeledger.engine.ops.alerts import run_alerts

        return run_alerts(session)
    raise ConfigError(f"unknown daemon job {name!r}")
