"""Reconciliation and exceptions as reports: the latest result with its breaks and cash lines,
and the exceptions open now and before (the CLI, the daily report and Fava read these)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.tables import reconciliation
from tradeledger.engine.trust.exceptions import active_locks, list_exceptions
from tradeledger.ledger.db import read_connection


def latest_reconciliation(ctx: Context) -> dict | None:
    """The newest reconciliation: when, clean or not, its breaks and cash lines."""
    t = reconciliation
    with read_connection(ctx.engine) as conn:
        row = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(1)).first()
        history = [{"id": r.id, "run_at": r.run_at, "clean": bool(r.clean), "breaks": r.breaks}
                   for r in conn.execute(sa.select(t.c.id, t.c.run_at, t.c.clean, t.c.breaks)
                                         .order_by(t.c.id.desc()).limit(20))]
    if row is None:
        return None
    result = json.loads(row.result or "{}")
    return {"id": row.id, "run_at": row.run_at, "clean": bool(row.clean), "break_count": row.breaks,
            "breaks": result.get("breaks", []), "cash": result.get("cash", []),
            "unattributed": result.get("unattributed", []), "history": history}


def exceptions(ctx: Context) -> dict:
    """Open (and acknowledged) exceptions, the whole history, and the instrument locks."""
    with read_connection(ctx.engine) as conn:
        everything = list_exceptions(conn)
        locks = active_locks(conn)
    open_ = [e for e in everything if e["state"] in ("open", "acknowledged")]
    return {"open": open_, "history": everything, "locks": locks}
