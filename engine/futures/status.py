"""What a trader asks about futures: the known contracts of an instrument, each instrument's roll
status, pinning a roll state, and storing the broker's contract dates.

* `contracts(env, instrument, on)`: the listed contracts around a date with their last trading day
  (the broker's when stored, else the rule's, and the difference when both exist), first notice,
  roll window, which one is priced (the current contract), which is next, and who holds what.
* `roll_status(env, on)`: per instrument, the contracts held per strategy, the old and new contract
  of the roll, days to the deadline, the state and who set it; a position still held in a contract
  whose deadline (first notice, else last trading day) is the next business day or has come raises
  a `held_into_expiry` exception (monitoring raises it too, and resolves it once it is gone).
* `set_roll_state(env, instrument, state)`: pin a state (`auto` hands it back to the calendar).
* `store_contract_details(env, rows)`: the broker's `lastTradeDateOrContractMonth` and
  `realExpirationDate` per contract, the truth from then on; a difference from the rule is raised
  as a `contract_dates_differ` exception (informational) and listed by `contracts`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.errors import UserError
from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.futures import calendar as cal
from tradeledger.engine.futures.exposure import held_by_instrument, instrument_index
from tradeledger.engine.futures.rolls import STATES
from tradeledger.engine.futures.state import instrument_roll, old_and_new, overrides, pinned_states
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.targets.prices import trading_config
from tradeledger.engine.accounting.holdings import holder_of
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.store import fmt_ts
from tradeledger.errors import UnknownName

UTC = dt.timezone.utc


def _future(config, name: str):
    if name not in config.instruments:
        raise UnknownName("instrument", name, config.instruments)
    instrument = config.instruments[name]
    if not instrument.is_future:
        raise ConfigError(f"{name} is not a future: it has no contracts to roll")
    return instrument


def _holders(ctx: Context, config, conn=None) -> dict[tuple, dict[str, Decimal]]:
    """(holder, instrument) -> {contract: units}; holder is the user's strategy name (never its
    account component) or 'unattributed'."""
    positions = {}
    for (account, code), units in ctx.ledger.positions(prefix=ctx.chart.root, conn=conn).items():
        holder = holder_of(ctx.chart, account)
        if holder is not False:
            owner = config.strategy_by_account(holder) if holder else None
            positions[(owner.name if owner else holder or "unattributed", code)] = units
    return held_by_instrument(positions, instrument_index(config))


def contracts(ctx: Context, name: str, on: dt.date, count: int = 6) -> list[dict]:
    config = trading_config(ctx)
    instrument = _future(config, name)
    with read_connection(ctx.engine) as conn:
        known = overrides(conn, instrument)
        details = {r.code: r for r in conn.execute(sa.select(tables.contract_detail).where(
            tables.contract_detail.c.instrument == name))}
    held = _holders(ctx, config)
    holders_of: dict[str, list[str]] = {}
    for (holder, inst), by_code in held.items():
        if inst == name:
            for code, units in by_code.items():
                holders_of.setdefault(code, []).append(f"{holder} {units}")
    old, new = old_and_new(instrument, on, known)
    start = min([on] + [cal.find(instrument.schedule, code).last_trade for code in holders_of])
    listed = cal.chain(instrument.schedule, start, count + len(holders_of), known)
    after_new = [d for d in listed if d.last_trade > new.last_trade]
    rows = []
    for dates in listed[:count + len(holders_of)]:
        rule_day = cal.last_trading_day(instrument.schedule.rule, dates.year, dates.month, instrument.schedule.region)
        detail = details.get(dates.code)
        role = "priced" if dates.code == new.code else "old" if old and dates.code == old.code else \
            "next" if after_new and dates.code == after_new[0].code else ""
        rows.append({
            "contract": dates.code, "month": dates.expiry, "last_trade": dates.last_trade.isoformat(),
            "rule_last_trade": rule_day.isoformat(), "source": "broker" if detail else "rule",
            "differs_from_rule": bool(detail and detail.last_trade_date and detail.last_trade_date != rule_day.isoformat()),
            "real_expiration": detail.real_expiration if detail else None,
            "first_notice": dates.first_notice.isoformat() if dates.first_notice else None,
            "roll_start": dates.roll_start.isoformat(), "force_from": dates.force_from.isoformat(),
            "role": role, "held_by": ", ".join(sorted(holders_of.get(dates.code, []))),
        })
    return rows


@dataclass(frozen=True)
class RollStatus:
    instrument: str
    state: str
    source: str
    old: str | None
    new: str
    days_to_deadline: int | None
    held: dict  # holder -> {contract: units}
    warnings: tuple[str, ...] = ()  # the held_into_expiry exceptions raised, in words

    def as_json(self) -> dict:
        return {"instrument": self.instrument, "state": self.state, "set_by": self.source, "old": self.old,
                "new": self.new, "days_to_deadline": self.days_to_deadline,
                "held": {h: {c: str(u) for c, u in by.items()} for h, by in self.held.items()},
                "held_into_expiry": list(self.warnings)}


@dataclass(frozen=True)
class HeldIntoExpiry:
    """A holder still holding a contract on the business day before its deadline, or later: the
    last trading day, or the first notice day of a physically delivered contract (delivery)."""

    instrument: str
    holder: str  # the strategy's name, or "unattributed"
    code: str
    units: Decimal
    deadline: dt.date
    notice: bool = False  # the deadline is the first notice day

    @property
    def subject(self) -> str:
        return f"{self.code} {self.holder}"

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(ExceptionKind.HELD_INTO_EXPIRY, self.subject)

    def describe(self) -> str:
        day = "first notice day" if self.notice else "last trading day"
        what = f"{self.holder} still holds {self.units} {self.code}, whose {day} is {self.deadline}"
        if self.holder == "unattributed":  # tradeledger rolls strategies only
            return (f"{what}: tradeledger does not roll unattributed positions: close it at the broker, or adopt "
                    f"it into a strategy (tradeledger adjust adopt {self.code} {self.units} --strategy NAME) so that its roll moves it")
        return f"{what}: roll or close it (tradeledger roll set {self.instrument} force, then roll execute)"


def held_into_expiry(config, held: dict, on: dt.date, known: dict) -> list[HeldIntoExpiry]:
    """Every position held on `on` in a contract whose deadline (first notice, else last trading
    day) is the next business day or earlier (pure): `held` is (holder, instrument) -> {contract:
    units}, as `_holders` reads it. The business day, not the calendar day, before: a contract
    whose last day is a Monday is said on the Friday, when there is still a session to roll in."""
    found = []
    for (holder, name), by_code in sorted(held.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        instrument = config.instruments[name]
        if not instrument.is_future:
            continue  # a share does not expire
        for code, units in sorted(by_code.items()):
            dates = cal.find(instrument.schedule, code, known)
            warn_from = cal.business_days_before(dates.deadline, 1, instrument.schedule.region)
            if units and on >= warn_from:
                found.append(HeldIntoExpiry(name, holder, code, units, dates.deadline, dates.first_notice is not None))
    return found


def expiring(ctx: Context, config, conn, on: dt.date) -> list[HeldIntoExpiry]:
    """`held_into_expiry` of what the ledger holds now (monitoring raises and resolves them)."""
    return held_into_expiry(config, _holders(ctx, config, conn), on, overrides(conn))


def roll_status(ctx: Context, on: dt.date, now: dt.datetime | None = None) -> list[RollStatus]:
    """Each future's roll status on `on`; a position held into its contract's expiry is raised as a
    `held_into_expiry` exception (stamped `now`, default the environment's clock) and named in
    the instrument's `warnings`."""
    config = trading_config(ctx)
    held = _holders(ctx, config)
    now = now or ctx.now()
    result = []
    with ctx.engine.begin() as conn:
        pinned, known = pinned_states(conn), overrides(conn)
        for name, instrument in sorted(config.instruments.items()):
            if not instrument.is_future:
                continue
            roll = instrument_roll(config, name, on, conn, None, pinned, known=known)
            old = cal.find(instrument.schedule, roll.old.code, known) if roll.old else None
            holders = {h: by for (h, inst), by in held.items() if inst == name}
            warnings = []
            for found in held_into_expiry(config, {k: v for k, v in held.items() if k[1] == name}, on, known):
                raise_exception(conn, ExceptionKind.HELD_INTO_EXPIRY, found.subject, found.describe(),
                                severity="error", dedupe_key=found.dedupe_key, now=now)
                warnings.append(found.describe())
            result.append(RollStatus(name, roll.state, roll.source, roll.old.code if roll.old else None, roll.new.code,
                                     (old.deadline - on).days if old else None, holders, tuple(warnings)))
    return result


def set_roll_state(ctx: Context, name: str, state: str, who: str, note: str = "", now: dt.datetime | None = None) -> str:
    """Pin `state` for instrument `name`; `auto` gives it back to the calendar. Returns the state."""
    config = trading_config(ctx)
    _future(config, name)
    if state != "auto" and state not in STATES:
        raise UserError(f"roll state must be one of {', '.join(STATES)} or auto, not {state!r}")
    t = tables.roll_state
    with ctx.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.instrument == name))
        if state != "auto":
            conn.execute(t.insert().values(instrument=name, state=state, set_by=who,
                                           set_at=fmt_ts(now or ctx.now()), note=note or None))
    return state


def store_contract_details(ctx: Context, rows: list[dict], source: str = "ib", now: dt.datetime | None = None) -> list[str]:
    """Store the broker's dates per contract (rows: instrument, code, last_trade_date (YYYYMMDD or
    ISO), real_expiration, con_id); returns the differences from the rule, one line each."""
    config = trading_config(ctx)
    now = now or ctx.now()
    t = tables.contract_detail
    differences = []
    with ctx.engine.begin() as conn:
        for row in rows:
            instrument = _future(config, row["instrument"])
            last = _iso(row.get("last_trade_date"))
            dates = cal.find(instrument.schedule, row["code"])
            conn.execute(t.delete().where(t.c.code == row["code"]))
            conn.execute(t.insert().values(code=row["code"], instrument=instrument.name, last_trade_date=last,
                                           real_expiration=_iso(row.get("real_expiration")),
                                           con_id=row.get("con_id"), source=source, fetched_at=fmt_ts(now)))
            if last and last != dates.last_trade.isoformat():
                line = f"{row['code']}: the broker says last trading day {last}, the rule {dates.last_trade}"
                differences.append(line)
                raise_exception(conn, ExceptionKind.CONTRACT_DATES_DIFFER, row["code"], line + " (the broker's date is used)",
                                severity="info", dedupe_key=dedupe_key(ExceptionKind.CONTRACT_DATES_DIFFER, row["code"], last), now=now)
    return differences


def _iso(text) -> str | None:
    if not text:
        return None
    text = str(text).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    if len(text) == 6 and text.isdigit():  # a month only: no day to store
        return None
    return dt.date.fromisoformat(text[:10]).isoformat()
