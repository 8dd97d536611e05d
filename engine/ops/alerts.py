"""Alerts: the daemon reaches the trader when something breaks, through the channels they choose.

What is sent (`alerts_for`, pure): every open exception at or above `min_severity`, and always a
silent daemon (`missed_daemon_run`), a failed job (`job_failed`) and a reconciliation break,
whatever their severity; plus a daily summary (`summary_alert`: P&L per strategy today, open
exceptions, the last reconciliation). Acknowledged exceptions are not sent: someone has them.

How it is sent: through apprise, so a channel is any apprise URL (mailto://, json://, slack://,
tgram://, ...). The URLs come from `[alerts] urls` or, for those with secrets in them, from
`$TRADELEDGER_ALERT_URLS` (whitespace separated; the service's 0600 environment file sets it).
The database keeps only a channel's id (12 hex digits of its URL's sha256), never its URL.

Delivery is an *outbox* (`alert_outbox`): `enqueue` writes one row per (alert, channel), and a
row that exists is never written again, which is the deduplication: an exception is one alert
per severity it reaches, however many runs see it. `deliver` sends the due rows outside any
transaction and records each outcome in its own: a failure is logged, counted and retried with
exponential backoff (`backoff`) up to `max_attempts`, and never raises into a job; a channel
that is down holds only its own rows. Rate limit: at most `max_per_hour` sent per channel in
any hour (`plan_delivery`, pure); the rest wait their turn, oldest first.

Once, however many deliver: before sending a row a deliverer *claims* it, in a transaction of its
own, with one UPDATE the database decides: the row still pending and due, its `next_at` moved a
lease (`CLAIM_SECONDS`) ahead and `sent_at` stamped with the claim. Of deliverers that read the
same due row at the same moment one claims it (rowcount 1) and sends it; the others find it not
due (rowcount 0) and skip it. A deliverer killed between its claim and recording the outcome
leaves the row pending: due again when the lease ends, and sent then by the next, so a send that
was under way may arrive twice (at least once, never lost). A pending row's `sent_at` is its
last claim: a send in flight until its lease ends; a failure clears it. The hour's count is the
rows sent in it plus those in flight, read in the planning snapshot and checked again in the
claim: on SQLite, whose writers queue, the limit is exact; on PostgreSQL claims for one channel
made at the same instant do not see each other, so each other deliverer claiming at that instant
can send one more than the limit (N deliverers: at most N - 1 over in an hour).

Whose clock: the outbox is shared by every process that delivers (the daemon's alerts job, and
`tradeledger alerts send` by cron, perhaps on another host sharing the PostgreSQL database), so its
times (`created_at`, `next_at`, `sent_at`) are the database's clock (ledger/dbclock.py), stamped by
the statements that write them and compared in the statements that read them: whether a row is
due after its backoff and how many a channel was sent in the last hour are decided by that one
clock. Judged by each host's own clock, a host 20 minutes ahead retried a failed channel before its
backoff and did not count sends 40-60 minutes old (over the limit), and a host 20 minutes behind
held back rows that were due and counted sends 60-80 minutes old (under it). The daily summary is
a schedule, like the daemon's daily jobs: due by the clock of the host that collects (`now`);
its key (`summary:<date>`) sends it once whoever collects it. None of these is the simulated
exchange's clock: alerts are about the machine, not the trading day.

    [alerts]
    urls = ["json://127.0.0.1:8080/hook"]   # apprise URLs; secrets in $TRADELEDGER_ALERT_URLS
    min_severity = "error"                   # info | warning | error | critical
    max_per_hour = 20                        # per channel
    max_attempts = 8                         # then the row is `failed` (logged)
    every_seconds = 60                       # the daemon's alerts job
    summary_time = "21:45"                   # UTC time of the daily summary; "" turns it off
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as sa_pg
from sqlalchemy.dialects import sqlite as sa_sqlite

from tradeledger.engine.context import Context
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.trust.exceptions import SEVERITIES, list_exceptions, open_counts
from tradeledger.engine.tables import alert_outbox
from tradeledger.ledger import db, dbclock

UTC = dt.timezone.utc
ALWAYS = ("missed_daemon_run", "job_failed", "reconciliation_break")
URLS_VARIABLE = "TRADELEDGER_ALERT_URLS"
CLAIM_SECONDS = 300  # a claimed row's lease: longer than any send (apprise times out well before)
log = logging.getLogger("tradeledger.alerts")


# -- configuration ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertConfig:
    urls: tuple[str, ...] = ()
    min_severity: str = "error"
    max_per_hour: int = 20
    max_attempts: int = 8
    every_seconds: int = 60
    summary_time: dt.time | None = dt.time(21, 45, tzinfo=UTC)

    @property
    def channels(self) -> dict[str, str]:
        """{channel id: URL}."""
        return {channel_id(url): url for url in self.urls}


def channel_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def _positive(table: dict, key: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"config: alerts.{key} must be a positive whole number, not {value!r}")
    return value


def parse_alert_config(raw: dict, environ: dict | None = None) -> AlertConfig:
    """[alerts] plus $TRADELEDGER_ALERT_URLS, validated (each URL must be one apprise knows)."""
    import apprise

    table = raw.get("alerts", {})
    if not isinstance(table, dict):
        raise ConfigError("config: [alerts] must be a table")
    known = {"urls", "min_severity", "max_per_hour", "max_attempts", "every_seconds", "summary_time"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"config: unknown [alerts] key {unknown[0]!r} ({', '.join(sorted(known))})")
    urls = table.get("urls", [])
    if isinstance(urls, str) or not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError("config: alerts.urls must be a list of apprise URLs")
    urls = list(urls) + (environ if environ is not None else os.environ).get(URLS_VARIABLE, "").split()
    for n, url in enumerate(urls):
        if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
            where = f"alerts.urls[{n}]" if n < len(table.get("urls", [])) else f"${URLS_VARIABLE}"
            raise ConfigError(f"config: {where} is not a notification URL apprise knows "
                              f"({url.split(':', 1)[0]}://...)")
    severity = table.get("min_severity", "error")
    if severity not in SEVERITIES:
        raise ConfigError(f"config: alerts.min_severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    summary: dt.time | None = AlertConfig.summary_time
    if "summary_time" in table:
        text = table["summary_time"]
        if text in ("", False):
            summary = None
        else:
            try:
                hour, minute = str(text).split(":")
                summary = dt.time(int(hour), int(minute), tzinfo=UTC)
            except ValueError:
                raise ConfigError(f"config: alerts.summary_time must be a UTC time HH:MM or \"\", "
                                  f"not {text!r}") from None
    return AlertConfig(tuple(dict.fromkeys(urls)), severity, _positive(table, "max_per_hour", 20),
                       _positive(table, "max_attempts", 8), _positive(table, "every_seconds", 60), summary)


# -- decisions (pure) ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    key: str
    severity: str
    title: str
    body: str


def alerts_for(exceptions: list[dict], min_severity: str, env: str) -> list[Alert]:
    """One alert per open exception (per severity it reached) that the trader must hear of."""
    floor = SEVERITIES.index(min_severity)
    found = []
    for e in sorted(exceptions, key=lambda e: e["id"]):
        if e["state"] != "open":
            continue
        if e["kind"] not in ALWAYS and SEVERITIES.index(e["severity"]) < floor:
            continue
        found.append(Alert(
            key=f"exception:{e['id']}:{e['severity']}", severity=e["severity"],
            title=f"[tradeledger {env}] {e['severity']}: {e['kind']} {e['subject']}",
            body=(f"{e['detail']}\n\nexception {e['id']} ({e['kind']}), first seen {e['first_seen'][:19]} UTC, "
                  f"seen {e['count']} time(s).\nSee: tradeledger --env {env} exceptions show {e['id']}")))
    return found


def pnl_by_strategy(income: dict[tuple[str, str], Decimal]) -> dict[str, dict[str, Decimal]]:
    """{strategy: {currency: P&L}} from income and expense balances (income is negative)."""
    result: dict[str, dict[str, Decimal]] = {}
    for (account, currency), amount in income.items():
        for prefix in ("Income:Trading:", "Expenses:Commissions:"):
            if account.startswith(prefix):
                strategy = account[len(prefix):]
                per = result.setdefault(strategy, {})
                per[currency] = per.get(currency, Decimal(0)) - amount
    return result


def summary_alert(env: str, day: dt.date, pnl: dict[str, dict[str, Decimal]], counts: dict[str, int],
                  open_kinds: dict[str, int], last_recon: dict | None) -> Alert:
    lines = [f"P&L on {day} by strategy:"]
    lines += [f"  {s}: " + ", ".join(f"{_money(amount)} {ccy}" for ccy, amount in sorted(per.items()))
              for s, per in sorted(pnl.items())] or ["  no P&L booked"]
    total = sum(counts.values())
    lines.append(f"Open exceptions: {total}" + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(open_kinds.items()))
                                                 + ")" if total else ""))
    if last_recon is None:
        lines.append("Reconciliation: never run")
    else:
        state = "clean" if last_recon["clean"] else f"NOT clean, {last_recon['breaks']} break(s)"
        lines.append(f"Reconciliation: {state} at {last_recon['run_at'][:19]} UTC")
    worst = next((s for s in reversed(SEVERITIES) if counts.get(s)), "info")
    return Alert(f"summary:{day}", "info", f"[tradeledger {env}] daily summary {day}", "\n".join(lines)) \
        if worst == "info" else Alert(f"summary:{day}", worst, f"[tradeledger {env}] daily summary {day}: "
                                      f"{total} open exception(s)", "\n".join(lines))


def _money(amount: Decimal) -> str:
    """Cents when that is exact, else every digit (a summary never rounds money away)."""
    cents = amount.quantize(Decimal("0.01"))
    return f"{cents:,}" if cents == amount else f"{amount.normalize():,f}"


def summary_due(now: dt.datetime, at: dt.time | None) -> dt.date | None:
    """The day whose summary is due at `now` (it goes out once, at or after `at`), or None."""
    if at is None:
        return None
    now = now.astimezone(UTC)
    return now.date() if now.timetz().replace(tzinfo=UTC) >= at else None


def backoff(attempts: int) -> dt.timedelta:
    """Wait before the next try after `attempts` failures: 30 s doubling, at most an hour."""
    return dt.timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def plan_delivery(due: list[tuple[int, str]], sent_last_hour: dict[str, int], max_per_hour: int) -> list[int]:
    """Which due rows (id, channel), oldest first, to send now within each channel's hourly limit."""
    room = {}
    chosen = []
    for row_id, channel in sorted(due):
        room.setdefault(channel, max_per_hour - sent_last_hour.get(channel, 0))
        if room[channel] > 0:
            room[channel] -= 1
            chosen.append(row_id)
    return chosen


# -- the outbox --------------------------------------------------------------------------------------

def enqueue(conn, alerts: list[Alert], channels: list[str], ahead: float = 0) -> int:
    """Write each (alert, channel) not written before (by anyone, however many write at once), due now
    by the database's clock; returns how many rows are new. `ahead`: tests only, a later moment of
    that clock (dbclock)."""
    if not alerts or not channels:
        return 0
    t = alert_outbox
    keys = [a.key for a in alerts]
    have = set(conn.execute(sa.select(t.c.alert_key, t.c.channel).where(t.c.alert_key.in_(keys))).all())
    rows = [dict(alert_key=a.key, channel=c, severity=a.severity, title=a.title, body=a.body, state="pending",
                 attempts=0) for a in alerts for c in channels if (a.key, c) not in have]
    if not rows:
        return 0
    # Two deliverers that collect the same new alert at once both find it unwritten: the one that
    # inserts second leaves it to the first (its row is the same alert) instead of failing.
    clock = dbclock.now(conn.dialect.name, ahead)
    insert = (sa_pg.insert(t) if conn.dialect.name == "postgresql" else sa_sqlite.insert(t)) \
        .values(created_at=clock, next_at=clock).on_conflict_do_nothing(index_elements=["alert_key", "channel"])
    return len(conn.execute(insert.returning(t.c.id), rows).all())


Sender = Callable[[str, str, str], str | None]  # (url, title, body) -> None when sent, else the reason


def apprise_send(url: str, title: str, body: str) -> str | None:
    """Send through apprise; the reason it gave when it failed. Never raises."""
    import apprise

    try:
        notifier = apprise.Apprise()
        if not notifier.add(url):
            return "apprise does not accept this URL"
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = bool(notifier.notify(title=title, body=body))
        if ok:
            return None
        lines = [line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines() if line.strip()]
        return (lines[-1] if lines else "apprise reported a failure")[:500]
    except Exception as exc:  # noqa: BLE001 - a channel's failure is data, never an exception
        return f"{type(exc).__name__}: {exc}"[:500]


@dataclass(frozen=True)
class Delivery:
    sent: int
    failed: int  # tries that failed this time (to be retried unless out of attempts)
    given_up: int
    waiting: int  # held back by the rate limit, not yet due after a failure, or another deliverer's


def _hour_count(dialect: str, ahead: float, channel=None):
    """Rows of the last hour by the database's clock: sent in it, or claimed and in flight (their
    lease not over). Counted per channel, or for `channel` (a correlated scalar)."""
    t = alert_outbox.alias("recent")
    counted = sa.and_(t.c.sent_at > dbclock.now(dialect, ahead - 3600), sa.or_(
        t.c.state == "sent", sa.and_(t.c.state == "pending", t.c.next_at > dbclock.now(dialect, ahead))))
    if channel is None:
        return sa.select(t.c.channel, sa.func.count()).where(counted).group_by(t.c.channel)
    return sa.select(sa.func.count()).where(counted, t.c.channel == channel).scalar_subquery()


def claim(conn, row_id: int, max_per_hour: int, ahead: float = 0) -> bool:
    """Take the row for this deliverer in one statement, if it is still pending and due and its
    channel has room in the hour: its `next_at` a lease ahead, `sent_at` the claim. False: another
    deliverer has it, or took the hour's last room."""
    t = alert_outbox
    dialect = conn.dialect.name
    result = conn.execute(t.update().where(
        t.c.id == row_id, t.c.state == "pending", t.c.next_at <= dbclock.now(dialect, ahead),
        _hour_count(dialect, ahead, t.c.channel) < max_per_hour,  # the claimed row's own channel
    ).values(next_at=dbclock.now(dialect, ahead + CLAIM_SECONDS), sent_at=dbclock.now(dialect, ahead)))
    return result.rowcount == 1


def deliver(ctx: Context, config: AlertConfig, send: Sender = apprise_send, logger: logging.Logger = log,
            ahead: float = 0) -> Delivery:
    """Send what is due, within the rate limit, each row claimed first (`claim`) and its outcome
    recorded after, each in its own transaction. Due and the last hour are the database's clock,
    read in the query that selects by them; a claim, a send and a backoff are stamped by it in the
    statement that writes them (`ahead`: tests only)."""
    engine = ctx.engine
    t = alert_outbox
    channels = config.channels
    with engine.begin() as conn:  # rows of channels no longer configured are dropped
        conn.execute(t.update().where(t.c.state == "pending", t.c.channel.not_in(list(channels) or [""]))
                     .values(state="dropped", last_error="channel no longer configured"))
    with db.read_connection(engine) as conn:  # one snapshot: the due rows and the hour agree
        dialect = conn.dialect.name
        due_now = sa.case((t.c.next_at <= dbclock.now(dialect, ahead), 1), else_=0).label("due")
        pending = conn.execute(sa.select(t.c.id, t.c.channel, due_now).where(t.c.state == "pending")).all()
        due = [(r.id, r.channel) for r in pending if r.due]
        sent_last_hour = dict(conn.execute(_hour_count(dialect, ahead)).all())
    chosen = plan_delivery(due, sent_last_hour, config.max_per_hour)
    sent = failed = given_up = 0
    for row_id in chosen:
        with engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == row_id)).first() \
                if claim(conn, row_id, config.max_per_hour, ahead) else None
        if row is None:  # another deliverer sends it (or took the hour's room): not ours
            continue
        error = send(channels[row.channel], row.title, row.body)
        attempts = row.attempts + 1
        if error is None:
            values = dict(state="sent", attempts=attempts, sent_at=dbclock.now(dialect, ahead), last_error=None)
            sent += 1
        elif attempts >= config.max_attempts:
            values = dict(state="failed", attempts=attempts, last_error=error, sent_at=None)
            given_up += 1
            logger.error("alert %s to channel %s failed %d times, giving up: %s", row.alert_key, row.channel,
                         attempts, error)
        else:
            wait = backoff(attempts).total_seconds()
            values = dict(attempts=attempts, last_error=error, next_at=dbclock.now(dialect, ahead + wait),
                          sent_at=None)
            failed += 1
            logger.warning("alert %s to channel %s failed (try %d of %d), will retry: %s", row.alert_key,
                           row.channel, attempts, config.max_attempts, error)
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == row_id, t.c.state == "pending").values(**values))
    return Delivery(sent, failed, given_up, len(pending) - sent - failed - given_up)


# -- the daemon's job ------------------------------------------------------------------------------

def collect(ctx: Context, config: AlertConfig, now: dt.datetime) -> list[Alert]:
    """What the trader must hear of now: open exceptions as configured, the day's summary when due."""
    from tradeledger.engine.trust.reconcile import last_reconciliation

    with db.read_connection(ctx.engine) as conn:
        exceptions = list_exceptions(conn, "open")
        found = alerts_for(exceptions, config.min_severity, ctx.settings.env)
        day = summary_due(now, config.summary_time)
        if day is not None:
            kinds: dict[str, int] = {}
            for e in exceptions:
                kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
            start = dt.datetime.combine(day, dt.time(0), tzinfo=UTC)
            pnl = pnl_by_strategy(ctx.ledger.income(since=start, conn=conn))
            found.append(summary_alert(ctx.settings.env, day, pnl, open_counts(conn), kinds,
                                       last_reconciliation(conn)))
    return found


def run_alerts(ctx: Context, now: dt.datetime | None = None, send: Sender = apprise_send,
               logger: logging.Logger = log, config: AlertConfig | None = None, ahead: float = 0) -> str:
    """Collect, enqueue (one transaction), deliver; a one-line result. Sending never raises. `now`
    (this host's clock) says only whether the daily summary is due; the outbox keeps the database's
    clock (`ahead`: tests only, a later moment of it)."""
    now = now or dt.datetime.now(UTC)
    config = config or parse_alert_config(ctx.settings.raw)
    if not config.urls:
        return "no alert channels configured"
    alerts = collect(ctx, config, now)
    with ctx.engine.begin() as conn:
        new = enqueue(conn, alerts, list(config.channels), ahead)
    result = deliver(ctx, config, send, logger, ahead)
    return (f"{new} new, {result.sent} sent, {result.failed} failed (will retry), {result.given_up} given up, "
            f"{result.waiting} waiting")
