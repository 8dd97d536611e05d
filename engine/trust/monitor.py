"""Monitoring: the anomalies no single step sees, raised as exceptions and resolved when they clear.

`findings` is a pure function over a snapshot of facts (`Facts`):

- a commission still pending long after its fill          -> commission_overdue
- an order sent (or planned) that is not done after a while -> order_stuck
- an order planned but never sent while no trader holds the  -> order_stuck (at once: its run was
  environment's trading lease                                   interrupted; rerun or replace it)
- a position held in a currency with no FX rate to the base -> missing_fx
- a held contract whose newest price is days old            -> stale_prices
- a daemon whose heartbeat has gone quiet while it runs     -> missed_daemon_run
- a future still held on the day before its last trading day -> held_into_expiry (also raised by
  (or later: a roll that never happened)                        `roll status`; resolved here once
                                                                the position is rolled or gone)

`check` reads the facts, raises every finding (one open exception per cause, by dedupe key) and
resolves every earlier monitoring exception that is no longer found, in one transaction (not the
daemon's settle job's `stale_prices` for a day without its settlement: that job resolves it once
the day is marked). The
thresholds come from `[monitor]` in config.toml. The daemon runs `check` with each
reconciliation; `tradeledger monitor` runs it by hand, perhaps on another host.

The daemon's silence is measured by the database's clock, not the monitor's: the heartbeat is
stamped by that clock in the statement that writes it (`daemon.write_heartbeat`), and it is read
here in the same query as the heartbeat (`Facts.heartbeat_now`). On PostgreSQL hosts sharing the
ledger may be minutes apart; by the reader's clock a monitor 20 minutes ahead called a live daemon
silent, one 20 minutes behind missed a dead one. Every other age here is the environment's `now`
against times the environment's clock wrote: on IB that is the database's clock too (ctx.now), so
an order's `sent_at`, stamped by the trader's host, and a monitor on another host agree whether it
is stuck; on sim the exchange's (one host).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.trust.exceptions import dedupe_key, list_exceptions, raise_exception, resolve_by_key
from tradeledger.engine.accounting.holders import holder_of
from tradeledger.ledger import dbclock
from tradeledger.ledger.numbers import to_decimal
from tradeledger.engine.setup.environment import ConfigError

KINDS = ("commission_overdue", "order_stuck", "missing_fx", "stale_prices", "missed_daemon_run", "held_into_expiry")


@dataclass(frozen=True)
class Thresholds:
    commission_overdue_minutes: int = 60
    order_stuck_minutes: int = 30
    stale_price_days: int = 4
    daemon_silence_minutes: int = 15


@dataclass(frozen=True)
class Facts:
    now: dt.datetime
    base_currency: str
    pending_commissions: tuple[tuple[str, str, dt.datetime], ...]  # (exec key, contract, fill time)
    open_orders: tuple[tuple[str, str, str, dt.datetime], ...]  # (order ref, contract, state, since)
    held: tuple[tuple[str, str], ...]  # (contract, currency) of every non-zero position
    fx_known: frozenset[str]  # currencies with an FX rate on or before today
    price_dates: dict  # contract -> newest price date (settlement or its instrument's close)
    heartbeat: tuple[str, dt.datetime] | None  # (state, at) of the daemon, None if it never ran
    # (order ref, contract, run, planned at) of planned orders while no trader holds the trading lease
    interrupted: tuple[tuple[str, str, int | None, dt.datetime], ...] = ()
    # The database's clock, read in the query that read the heartbeat: what stamped the heartbeat
    # (`daemon.write_heartbeat`), so what its silence is measured against; not `now`, the
    # environment's (on sim, the exchange's, which may stand years away), nor this host's clock,
    # which may be minutes from the daemon's host's. None: `now`.
    heartbeat_now: dt.datetime | None = None
    # positions held into their contract's expiry (engine/futures/status.HeldIntoExpiry)
    expiring: tuple = ()


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    severity: str = "warning"

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.kind, self.subject)


def findings(facts: Facts, limits: Thresholds) -> list[Finding]:
    """Every anomaly in the facts (pure)."""
    now, found = facts.now, []
    for key, contract, time in facts.pending_commissions:
        age = now - time
        if age > dt.timedelta(minutes=limits.commission_overdue_minutes):
            found.append(Finding("commission_overdue", key, f"the commission of fill {key} ({contract}) is "
                                 f"still unknown {int(age.total_seconds() // 60)} minutes after the fill"))
    stuck_now = {ref for ref, *_ in facts.interrupted}
    for ref, contract, run_id, since in facts.interrupted:
        found.append(Finding("order_stuck", ref, f"order {ref} ({contract}) was planned by run {run_id} at "
                             f"{since:%Y-%m-%d %H:%M} UTC and never sent, and no trader is running: the run was "
                             f"interrupted; `tradeledger cycle --approve --run {run_id}` resumes it (a newer run "
                             f"cancels it)", "error"))
    for ref, contract, state, since in facts.open_orders:
        age = now - since
        if ref not in stuck_now and age > dt.timedelta(minutes=limits.order_stuck_minutes):
            found.append(Finding("order_stuck", ref, f"order {ref} ({contract}) is still {state} after "
                                 f"{int(age.total_seconds() // 60)} minutes", "error"))
    for currency in sorted({ccy for _, ccy in facts.held if ccy and ccy != facts.base_currency}):
        if currency not in facts.fx_known:
            found.append(Finding("missing_fx", currency, f"positions are held in {currency} but there is no "
                                 f"{currency}/{facts.base_currency} rate: base-currency P&L is left blank"))
    for contract, _ccy in sorted(facts.held):
        newest = facts.price_dates.get(contract)
        if newest is None or (now.date() - newest).days > limits.stale_price_days:
            when = "no price at all" if newest is None else f"the newest price is from {newest}"
            found.append(Finding("stale_prices", contract, f"{contract} is held and {when}"))
    for held in facts.expiring:
        found.append(Finding("held_into_expiry", held.subject, held.describe(), "error"))
    if facts.heartbeat is not None:
        state, at = facts.heartbeat
        silence = (facts.heartbeat_now or now) - at
        if state == "running" and silence > dt.timedelta(minutes=limits.daemon_silence_minutes):
            found.append(Finding("missed_daemon_run", "daemon", f"the daemon says it is running but its last "
                                 f"heartbeat is {int(silence.total_seconds() // 60)} minutes old", "error"))
    return found


def thresholds(raw_config: dict) -> Thresholds:
    table = raw_config.get("monitor", {})
    values = {}
    for name in Thresholds.__dataclass_fields__:
        if name in table:
            number = to_decimal(str(table[name]), f"monitor.{name}")
            if number <= 0 or number != int(number):
                raise ConfigError(f"config: monitor.{name} must be a positive whole number")
            values[name] = int(number)
    return Thresholds(**values)


def read_facts(conn, env, config, now: dt.datetime) -> Facts:
    from tradeledger.engine.setup.config import instrument_of_contract

    f, o = tables.fill, tables.broker_order
    pending = tuple((r.exec_key, r.contract, _time(r.time)) for r in conn.execute(
        sa.select(f.c.exec_key, f.c.contract, f.c.time).where(f.c.commission.is_(None), f.c.superseded_by.is_(None))))
    rows = conn.execute(sa.select(o).where(o.c.state.in_(("planned", "sent", "partial")))).all()
    orders = tuple((r.order_ref, r.contract, r.state, _time(r.sent_at or r.created_at)) for r in rows)
    from tradeledger.engine.trading.lease import live_holder

    trader = live_holder(None, env.settings.env, conn)
    interrupted = () if trader is not None else tuple(
        (r.order_ref, r.contract, r.run_id, _time(r.created_at)) for r in rows if r.state == "planned")
    currencies = {c.name: c.currency for c in env.ledger.commodities(conn) if c.kind != "currency"}
    chart = env.chart
    held = set()
    for (account, code), units in env.ledger.positions(prefix=chart.root, conn=conn).items():
        if units != 0 and holder_of(chart, account) is not False:
            held.add((code, currencies.get(code) or ""))
    today = now.date().isoformat()
    fx_known = frozenset(conn.execute(sa.select(tables.fx_rate.c.currency).where(
        tables.fx_rate.c.date <= today).distinct()).scalars())
    dates: dict = {}
    for code, day in conn.execute(sa.select(tables.settlement.c.contract, sa.func.max(tables.settlement.c.date))
                                  .group_by(tables.settlement.c.contract)):
        dates[code] = dt.date.fromisoformat(day)
    closes = dict(conn.execute(sa.select(tables.price_bar.c.instrument, sa.func.max(tables.price_bar.c.date))
                               .group_by(tables.price_bar.c.instrument)).all())
    for code, _ccy in held:
        instrument = instrument_of_contract(config, code)
        if instrument is not None and instrument.name in closes:
            close = dt.date.fromisoformat(closes[instrument.name])
            dates[code] = max(dates.get(code, close), close)
    from tradeledger.engine.futures.status import expiring

    heartbeat, heartbeat_now = _heartbeat(conn, env.settings.env)
    return Facts(now, env.settings.base_currency, pending, orders, tuple(sorted(held)), fx_known, dates,
                 heartbeat, interrupted, heartbeat_now=heartbeat_now,
                 expiring=tuple(expiring(env, config, conn, now.date())))


def _heartbeat(conn, env_name: str) -> tuple[tuple[str, dt.datetime] | None, dt.datetime | None]:
    """The daemon's (state, at) and the database's clock, read in one query: the clock that stamped it."""
    from tradeledger.engine.tables import daemon_heartbeat as hb

    row = conn.execute(sa.select(hb.c.state, hb.c.at, dbclock.now(conn.dialect.name).label("db_now"))
                       .where(hb.c.env == env_name)).first()
    return (None, None) if row is None else ((row.state, _time(row.at)), _time(row.db_now))


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


SETTLEMENT_MISSING = dedupe_key("stale_prices", "settlement") + ":"  # the daemon's settle job raises these


def _monitored(key: str) -> bool:
    """Whether an open exception of a monitoring kind is monitoring's own to resolve: not a day's
    missing settlement the settle job raised (same kind, `stale_prices`), which no finding here
    stands for; resolved as "no longer found" it lived until the next monitor run, a few minutes."""
    return not key.startswith(SETTLEMENT_MISSING)


def check(session, now: dt.datetime | None = None, who: str = "monitor") -> list[Finding]:
    """Raise what is found, resolve what cleared; one transaction. Returns the findings."""
    now = now or session.now()
    limits = thresholds(session.settings.raw)
    with session.engine.begin() as conn:
        found = findings(read_facts(conn, session, session.config, now), limits)
        keys = {finding.dedupe_key for finding in found}
        for finding in found:
            raise_exception(conn, finding.kind, finding.subject, finding.detail, finding.severity,
                            finding.dedupe_key, now=now)
        for open_one in list_exceptions(conn, "open"):
            if open_one["kind"] in KINDS and open_one["dedupe_key"] not in keys and _monitored(open_one["dedupe_key"]):
                resolve_by_key(conn, open_one["dedupe_key"], who, "no longer found by monitoring", now=now)
    return found
