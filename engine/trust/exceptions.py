"""Exceptions and instrument locks: every anomaly visible, deduplicated, and resolved with a reason.

An *exception* is a typed record of something a person should know about: a reconciliation
break, a fill without an orderRef, a commission overdue, a broker that cannot be reached. It
has a kind (`ExceptionKind`), a severity, a subject (what it is about, e.g. a contract) and a
*dedupe key* (`dedupe_key(kind, *parts)`, default `kind:subject`): one cause is one exception,
however many runs see it. Raising the same cause
again while its exception is open (or acknowledged) updates `last_seen` and `count` (and keeps
the highest severity and the latest detail) instead of adding a row; once it is resolved, the
next occurrence opens a new exception.

Lifecycle, each step with who, when and why:

    open --acknowledge--> acknowledged --resolve--> resolved
      \\__________________resolve_________________/

A *lock* stops orders for an instrument (or a single contract) until the exception that caused
it is resolved: resolving an exception releases every lock it holds, and `unlock` releases a
key by hand. `active_locks` is what order planning consults.

Every function writes inside the caller's connection (its transaction), so that a decision and
the exception it raises commit together. At most one open exception per dedupe key is also
enforced by the database (a partial unique index); a concurrent raise that loses the race
updates the winner's row instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.tables import instrument_lock, tl_exception
from tradeledger.engine.trust.reading import OPEN_STATES, SEVERITIES  # in increasing order; here for status's read path
from tradeledger.ledger.store import fmt_ts
from tradeledger.errors import UserError

UTC = dt.timezone.utc


class ExceptionKind(StrEnum):
    """What an exception is about (stored as its value)."""

    RECONCILIATION_BREAK = "reconciliation_break"
    UNATTRIBUTED_POSITION = "unattributed_position"
    UNATTRIBUTED_FILL = "unattributed_fill"
    COMMISSION_OVERDUE = "commission_overdue"
    ORDER_REJECTED = "order_rejected"
    ORDER_STUCK = "order_stuck"
    OVERFILL = "overfill"
    STALE_PRICES = "stale_prices"
    MISSING_FX = "missing_fx"
    MISSED_DAEMON_RUN = "missed_daemon_run"
    BROKER_DISCONNECTED = "broker_disconnected"
    LIMIT_HIT = "limit_hit"
    JOB_FAILED = "job_failed"
    APPROVAL_DISCARDED = "approval_discarded"  # a run approved, not executed, superseded unattended (targets/runs.py)
    CORPORATE_ACTION = "corporate_action"
    STATEMENT_DIFFERENCE = "statement_difference"
    CASH_MOVEMENT = "cash_movement"
    MISSING_FINAL_SETTLEMENT = "missing_final_settlement"
    INTERRUPTED_ROLL = "interrupted_roll"
    HELD_INTO_EXPIRY = "held_into_expiry"
    CONTRACT_DATES_DIFFER = "contract_dates_differ"
    ORDER_OUTCOME_UNKNOWN = "order_outcome_unknown"  # not reported by a broker that forgot it (trading/unknown.py)


KINDS = tuple(kind.value for kind in ExceptionKind)
# The cause an execution that could not be booked is deduplicated under, whichever kind it raises
# (overfill or unattributed_fill): one exception per execution, apart from its booked fill's.
UNBOOKED_EXECUTION = "unbooked_execution"
# The cause a dividend the broker paid and nobody imported is deduplicated under (corporate_action).
UNBOOKED_DIVIDEND = "unbooked_dividend"
CAUSES = (UNBOOKED_EXECUTION, UNBOOKED_DIVIDEND)

STATES = ("open", "acknowledged", "resolved")


class ExceptionStateError(UserError):
    """An exception or lock cannot do what was asked (unknown id, already resolved, no reason)."""


def _now(now: dt.datetime) -> str:
    # Every stamp is the caller's `now` (the environment's clock, `ctx.now()`): a sim environment's
    # exceptions and locks are dated by its exchange's clock, never by the machine's.
    if not isinstance(now, dt.datetime):
        raise TypeError(f"now must be a datetime (the environment's clock), not {now!r}")
    return fmt_ts(now)


def _require(value: str, what: str) -> str:
    if not value or not str(value).strip():
        raise ExceptionStateError(f"{what} is required")
    return str(value).strip()


def dedupe_key(kind: ExceptionKind | str, *parts: object) -> str:
    """The one spelling of a dedupe key: the kind (or cause) and the parts that name one cause,
    e.g. `dedupe_key(ExceptionKind.UNATTRIBUTED_FILL, account, exec_key)`. Every raise and every
    resolve builds its key here, so the two always agree."""
    if isinstance(kind, str) and not isinstance(kind, ExceptionKind) and kind not in CAUSES:
        kind = ExceptionKind(kind)
    return ":".join([str(kind), *(str(p) for p in parts)])


def key_prefix(kind: ExceptionKind, *parts: object) -> str:
    """What every key of `kind` that begins with `parts` starts with."""
    return dedupe_key(kind, *parts, "")


def default_key(kind: ExceptionKind | str, subject: str) -> str:
    return dedupe_key(kind, subject)


@dataclass(frozen=True)
class Occurrence:
    """An exception to raise, decided before the write that raises it (a plan can show it, and
    its transaction raises it with the entries it goes with)."""

    kind: ExceptionKind
    subject: str
    detail: str
    dedupe_key: str
    severity: str = "warning"


def raise_occurrence(conn: Connection, occurrence: Occurrence, *, now: dt.datetime) -> int:
    """`raise_exception` of a planned `Occurrence`; returns the exception's id."""
    o = occurrence
    return raise_exception(conn, o.kind, o.subject, o.detail, o.severity, o.dedupe_key, now=now)


def raise_exception(conn: Connection, kind: ExceptionKind | str, subject: str, detail: str, severity: str = "warning",
                    dedupe_key: str | None = None, *, now: dt.datetime) -> int:
    """Open an exception, or bump the open one with the same dedupe key; returns its id. `now` is
    required (keyword only): the environment's clock, so that no caller stamps by the wall clock."""
    if kind not in KINDS:
        raise ExceptionStateError(f"unknown exception kind {kind!r} (one of {', '.join(KINDS)})")
    kind = ExceptionKind(kind)
    if severity not in SEVERITIES:
        raise ExceptionStateError(f"unknown severity {severity!r} (one of {', '.join(SEVERITIES)})")
    subject = _require(subject, "a subject")
    key = dedupe_key or default_key(kind, subject)
    at = _now(now)
    existing = _open_by_key(conn, key)
    if existing is None:
        try:
            with conn.begin_nested():
                return conn.execute(tl_exception.insert().values(
                    kind=kind.value, severity=severity, subject=subject, detail=detail or "", dedupe_key=key,
                    state="open", first_seen=at, last_seen=at, count=1)).inserted_primary_key[0]
        except sa.exc.IntegrityError:  # another writer opened the same cause first
            existing = _open_by_key(conn, key)
            if existing is None:
                raise
    worst = max(existing.severity, severity, key=SEVERITIES.index)
    conn.execute(tl_exception.update().where(tl_exception.c.id == existing.id).values(
        last_seen=max(at, existing.last_seen), count=tl_exception.c.count + 1, severity=worst,
        detail=detail or existing.detail))
    return existing.id


def _open_by_key(conn: Connection, key: str):
    t = tl_exception
    return conn.execute(sa.select(t).where(t.c.dedupe_key == key, t.c.state.in_(OPEN_STATES))).first()


def _row(conn: Connection, exception_id: int):
    row = conn.execute(sa.select(tl_exception).where(tl_exception.c.id == exception_id)).first()
    if row is None:
        raise ExceptionStateError(f"no exception {exception_id}")
    return row


def acknowledge(conn: Connection, id: int, who: str, why: str, *, now: dt.datetime) -> None:
    """Someone has seen it and takes it on; it stays open for dedupe and counts."""
    row = _row(conn, id)
    who, why = _require(who, "who"), _require(why, "a reason (--why)")
    if row.state != "open":
        raise ExceptionStateError(f"exception {id} is {row.state}; only an open exception can be acknowledged")
    conn.execute(tl_exception.update().where(tl_exception.c.id == id).values(
        state="acknowledged", acknowledged_at=_now(now), acknowledged_by=who, acknowledged_why=why))


def resolve(conn: Connection, id: int, who: str, why: str, *, now: dt.datetime) -> None:
    """Close an exception and release the locks it holds."""
    row = _row(conn, id)
    who, why = _require(who, "who"), _require(why, "a reason (--why)")
    if row.state == "resolved":
        raise ExceptionStateError(f"exception {id} is already resolved")
    at = _now(now)
    conn.execute(tl_exception.update().where(tl_exception.c.id == id).values(
        state="resolved", resolved_at=at, resolved_by=who, resolved_why=why))
    lk = instrument_lock
    conn.execute(lk.update().where(lk.c.exception_id == id, lk.c.unlocked_at.is_(None)).values(
        unlocked_at=at, unlocked_by=who, unlock_why=f"exception {id} resolved: {why}"))


def resolve_by_key(conn: Connection, dedupe_key: str, who: str, why: str, *, now: dt.datetime) -> bool:
    """Resolve the open exception with this dedupe key; False when there is none."""
    row = _open_by_key(conn, dedupe_key)
    if row is None:
        return False
    resolve(conn, row.id, who, why, now=now)
    return True


def _as_dict(row) -> dict:
    return {
        "id": row.id, "kind": row.kind, "severity": row.severity, "subject": row.subject,
        "detail": row.detail, "dedupe_key": row.dedupe_key, "state": row.state,
        "first_seen": row.first_seen, "last_seen": row.last_seen, "count": row.count,
        "acknowledged": None if row.acknowledged_at is None else {
            "at": row.acknowledged_at, "by": row.acknowledged_by, "why": row.acknowledged_why},
        "resolved": None if row.resolved_at is None else {
            "at": row.resolved_at, "by": row.resolved_by, "why": row.resolved_why},
    }


def list_exceptions(conn: Connection, state: str | None = None) -> list[dict]:
    """Exceptions, newest first; `state` is one state, "open" meaning open or acknowledged, or None: all."""
    t = tl_exception
    query = sa.select(t).order_by(t.c.id.desc())
    if state == "open":
        query = query.where(t.c.state.in_(OPEN_STATES))
    elif state is not None:
        if state not in STATES:
            raise ExceptionStateError(f"unknown state {state!r} (one of {', '.join(STATES)})")
        query = query.where(t.c.state == state)
    return [_as_dict(r) for r in conn.execute(query)]


def get_exception(conn: Connection, id: int) -> dict:
    info = _as_dict(_row(conn, id))
    lk = instrument_lock
    info["locks"] = [{"key": r.lock_key, "reason": r.reason, "locked_at": r.locked_at,
                      "unlocked_at": r.unlocked_at, "unlocked_by": r.unlocked_by, "why": r.unlock_why}
                     for r in conn.execute(sa.select(lk).where(lk.c.exception_id == id).order_by(lk.c.id))]
    return info


def open_counts(conn: Connection) -> dict[str, int]:
    """{severity: number of open or acknowledged exceptions}, every severity present."""
    t = tl_exception
    counts = dict(conn.execute(sa.select(t.c.severity, sa.func.count()).where(
        t.c.state.in_(OPEN_STATES)).group_by(t.c.severity)).all())
    return {s: int(counts.get(s, 0)) for s in SEVERITIES}


# -- locks --------------------------------------------------------------------------------------

def lock(conn: Connection, instrument_or_contract: str, reason: str, exception_id: int | None, *,
         now: dt.datetime) -> int:
    """Lock a key against new orders; locking it again for the same exception is a no-op."""
    key, reason = _require(instrument_or_contract, "a lock key"), _require(reason, "a lock reason")
    lk = instrument_lock
    query = sa.select(lk).where(lk.c.lock_key == key, lk.c.unlocked_at.is_(None))
    query = query.where(lk.c.exception_id.is_(None) if exception_id is None else lk.c.exception_id == exception_id)
    row = conn.execute(query).first()
    if row is not None:
        if row.reason != reason:
            conn.execute(lk.update().where(lk.c.id == row.id).values(reason=reason))
        return row.id
    return conn.execute(lk.insert().values(lock_key=key, reason=reason, exception_id=exception_id,
                                           locked_at=_now(now))).inserted_primary_key[0]


def unlock(conn: Connection, key: str, who: str, why: str, *, now: dt.datetime) -> int:
    """Release every active lock on a key by hand; returns how many were released."""
    who, why = _require(who, "who"), _require(why, "a reason")
    lk = instrument_lock
    result = conn.execute(lk.update().where(lk.c.lock_key == key, lk.c.unlocked_at.is_(None)).values(
        unlocked_at=_now(now), unlocked_by=who, unlock_why=why))
    return result.rowcount


def active_locks(conn: Connection) -> dict[str, str]:
    """{instrument or contract: reason} for every active lock (reasons of one key joined)."""
    lk = instrument_lock
    result: dict[str, str] = {}
    for r in conn.execute(sa.select(lk).where(lk.c.unlocked_at.is_(None)).order_by(lk.c.id)):
        result[r.lock_key] = f"{result[r.lock_key]}; {r.reason}" if r.lock_key in result else r.reason
    return result
