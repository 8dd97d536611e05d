"""Broker snapshots: what the broker says the account holds, stored with the moment it was taken.

A snapshot is the broker's `AccountSnapshot` (positions per contract, cash per currency, its
unsettled futures P&L, open orders) written once, in one database transaction, to the
`broker_snapshot` tables. It is the broker's side of every reconciliation.

A snapshot that fails for any reason (the broker disconnected, refused, or answered something
unusable) is recorded too, as a row with status `failed`, its error and no positions, and it
raises a `broker_disconnected` exception. A failed snapshot is never read as "flat":
reconciliation compares nothing against it. A later successful
snapshot resolves the disconnection exception.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Context
from tradeledger.broker.base import AccountSnapshot, Broker, contract_to_json
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception, resolve_by_key
from tradeledger.engine.tables import broker_snapshot, snapshot_cash, snapshot_order, snapshot_position
from tradeledger.ledger.numbers import to_scaled
from tradeledger.ledger.store import fmt_ts

UTC = dt.timezone.utc
ZERO = Decimal(0)


@dataclass(frozen=True)
class SnapshotResult:
    """The outcome of `take_snapshot`: the stored row's id and the snapshot, or the error."""

    id: int
    snapshot: AccountSnapshot | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.snapshot is not None


def disconnect_key(account: str) -> str:
    return dedupe_key(ExceptionKind.BROKER_DISCONNECTED, account)


def validate_snapshot(snap: AccountSnapshot, account: str) -> None:
    """Refuse a snapshot that cannot be trusted (wrong account, no time, duplicate contracts)."""
    if snap.account != account:
        raise ValueError(f"the broker answered for account {snap.account}, not {account}")
    if snap.taken_at is None or snap.taken_at.tzinfo is None:
        raise ValueError("the snapshot has no timezone-aware time")
    seen = set()
    for p in snap.positions:
        if p.contract.code in seen:
            raise ValueError(f"the snapshot lists {p.contract.code} twice")
        seen.add(p.contract.code)


def take_snapshot(ctx: Context, broker: Broker, now: dt.datetime | None = None) -> SnapshotResult:
    """Ask the broker for a snapshot and store it; a failure is stored as failed, never raised."""
    engine = ctx.engine
    account = ctx.settings.account
    now = now or ctx.now()
    try:
        snap = broker.snapshot()
        validate_snapshot(snap, account)
    except Exception as exc:  # BrokerDisconnected, BrokerError, or anything else: never "flat"
        error = f"{type(exc).__name__}: {exc}"
        with engine.begin() as conn:
            sid = record_failed(conn, account, now, error)
        return SnapshotResult(sid, None, error)
    with engine.begin() as conn:
        sid = record_snapshot(conn, snap, now)
    return SnapshotResult(sid, snap)


def record_failed(conn: Connection, account: str, now: dt.datetime, error: str) -> int:
    sid = conn.execute(broker_snapshot.insert().values(
        account=account, taken_at=fmt_ts(now), recorded_at=fmt_ts(now), status="failed", error=error,
        positions=0)).inserted_primary_key[0]
    raise_exception(conn, ExceptionKind.BROKER_DISCONNECTED, account, f"snapshot {sid} failed: {error}", severity="error",
                    dedupe_key=disconnect_key(account), now=now)
    return sid


def record_snapshot(conn: Connection, snap: AccountSnapshot, now: dt.datetime) -> int:
    """Store a successful snapshot (positions, cash + unsettled P&L, open orders) in one transaction."""
    sid = conn.execute(broker_snapshot.insert().values(
        account=snap.account, taken_at=fmt_ts(snap.taken_at), recorded_at=fmt_ts(now), status="ok",
        error=None, positions=len(snap.positions))).inserted_primary_key[0]
    if snap.positions:
        conn.execute(snapshot_position.insert(), [
            dict(snapshot_id=sid, contract=p.contract.code, contract_spec=contract_to_json(p.contract),
                 quantity=to_scaled(p.quantity, f"{p.contract.code} position"),
                 avg_cost=to_scaled(p.avg_cost, f"{p.contract.code} average cost")) for p in snap.positions])
    cash = dict(snap.cash)
    unsettled = dict(snap.unsettled_pnl)
    rows = [dict(snapshot_id=sid, currency=ccy, cash=to_scaled(cash.get(ccy, ZERO), f"{ccy} cash"),
                 unsettled=to_scaled(unsettled.get(ccy, ZERO), f"{ccy} unsettled P&L"))
            for ccy in sorted(set(cash) | set(unsettled))]
    if rows:
        conn.execute(snapshot_cash.insert(), rows)
    orders = [dict(snapshot_id=sid, seq=i, order_ref=o.order_ref, broker_order_id=o.broker_order_id,
                   contract=o.contract_code, side=o.side, quantity=to_scaled(o.quantity, "order quantity"),
                   filled=to_scaled(o.filled, "filled"), status=o.status) for i, o in enumerate(snap.open_orders)]
    if orders:
        conn.execute(snapshot_order.insert(), orders)
    resolve_by_key(conn, disconnect_key(snap.account), "snapshot", f"snapshot {sid} succeeded", now=now)
    return sid


def latest_snapshot(conn: Connection, account: str | None = None) -> dict | None:
    """The newest snapshot row (ok or failed) as a dict, or None."""
    t = broker_snapshot
    query = sa.select(t).order_by(t.c.id.desc()).limit(1)
    if account is not None:
        query = query.where(t.c.account == account)
    row = conn.execute(query).first()
    if row is None:
        return None
    return {"id": row.id, "account": row.account, "taken_at": row.taken_at, "recorded_at": row.recorded_at,
            "status": row.status, "error": row.error, "positions": row.positions}


def snapshot_json(result: SnapshotResult) -> dict:
    if not result.ok:
        return {"id": result.id, "status": "failed", "error": result.error}
    s = result.snapshot
    unsettled = dict(s.unsettled_pnl)
    return {"id": result.id, "status": "ok", "account": s.account, "taken_at": fmt_ts(s.taken_at),
            "positions": [{"contract": p.contract.code, "sec_type": p.contract.sec_type, "qty": p.quantity,
                           "avg_cost": p.avg_cost} for p in s.positions],
            "cash": [{"currency": c, "cash": a, "unsettled": unsettled.get(c, ZERO)} for c, a in s.cash],
            "open_orders": [{"order_ref": o.order_ref, "contract": o.contract_code, "side": o.side,
                             "qty": o.quantity, "filled": o.filled, "status": o.status} for o in s.open_orders]}


def session_now(session) -> dt.datetime:
    """The session's clock, or the wall clock when that cannot be read (a broker that is down)."""
    try:
        return session.now()
    except Exception:
        return dt.datetime.now(dt.timezone.utc)


def snapshot_session(session) -> SnapshotResult:
    """Snapshot a Session's own broker; one that cannot even be reached is a failed snapshot, stored."""
    now = session_now(session)
    try:
        broker = session.broker
    except Exception as exc:  # unreachable: recorded as a failed snapshot
        with session.engine.begin() as conn:
            sid = record_failed(conn, session.settings.account, now, f"{type(exc).__name__}: {exc}")
        return SnapshotResult(sid, None, str(exc))
    return take_snapshot(session, broker, now)
