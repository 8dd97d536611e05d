"""`status`: an environment at a glance, decided here so that the command only prints it.

One dict: the environment's identity and database, the ledger's size, whether the broker answers
(when asked to probe it), the opening, the last snapshot and reconciliation, open exceptions and
locks, the latest target run, today's P&L per currency (trading income less commissions booked
since midnight UTC of the environment's clock) and the daemon's last heartbeat (its `at` as
stored: the database's clock, which stamps it, UTC; how old it is, `monitor` and the health
endpoint judge by the same clock).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.ledger import db
from tradeledger.ledger.db import read_connection

UTC = dt.timezone.utc
PNL_ACCOUNTS = ("Income:Trading:", "Expenses:Commissions:")


def environment_status(ctx: Context, probe_broker: bool) -> dict:
    """Everything `tradeledger status` shows, in the order it shows it."""
    txns, postings = ctx.ledger.count()
    info = {
        "environment": ctx.name, "account": ctx.settings.account, "broker": ctx.settings.broker,
        "database": ctx.engine.url.render_as_string(hide_password=True),
        "schema_revision": db.current_revision(ctx.engine),
        "accounts": len(ctx.ledger.accounts()), "transactions": txns, "postings": postings,
        "ledger_file": str(ctx.ledger_path) if ctx.ledger_path.exists() else None,
    }
    return info | operations_status(ctx, probe_broker)


def operations_status(ctx: Context, probe_broker: bool) -> dict:
    """Broker, snapshot, reconciliation, exceptions, locks, target run, today's P&L, daemon."""
    from tradeledger.engine.ops.daemon import read_heartbeat
    from tradeledger.engine.targets.run_state import status_entry
    from tradeledger.engine.targets.runs import latest_run, superseded_by_run
    from tradeledger.engine.setup.session import Session
    from tradeledger.engine.trust import exceptions, snapshots
    from tradeledger.engine.trust.opening import opening_status
    from tradeledger.engine.trust.reconcile import last_reconciliation, session_now

    info: dict = {}
    with Session(ctx) as session:
        if probe_broker:
            try:
                session.broker
                info["broker_reachable"] = True
            except Exception as exc:  # reachable or not is the answer, not an error
                info["broker_reachable"] = False
                info["broker_error"] = f"{type(exc).__name__}: {exc}"
        else:
            info["broker_reachable"] = "not checked"
        now = session_now(session)
        today = now.date()
    with read_connection(ctx.engine) as conn:
        info["opening"] = opening_status(conn, ctx.settings.account)
        info["last_snapshot"] = snapshots.latest_snapshot(conn, ctx.settings.account)
        info["last_reconciliation"] = last_reconciliation(conn)
        info["open_exceptions"] = exceptions.open_counts(conn)
        info["locks"] = exceptions.active_locks(conn)
        # Its state as it stands (an approved run past max_run_age_hours is expired), as `targets show` says.
        run = latest_run(ctx, now, conn)
        info["latest_target_run"] = None if run is None else status_entry(run.id, run.as_of, run.status,
                                                                          superseded_by_run(ctx, run.id, conn))
        beat = read_heartbeat(conn, ctx.name) if sa.inspect(conn).has_table("daemon_heartbeat") else None
        info["daemon_heartbeat"] = "never" if beat is None else {
            k: beat[k] for k in ("at", "state", "last_job", "last_result") if k in beat}
    info["pnl_today"] = {"date": today.isoformat(), **pnl_since(ctx, today)}
    return info


def pnl_since(ctx: Context, day: dt.date) -> dict[str, Decimal]:
    """Trading income less commissions booked from `day` on, per currency (income is negative)."""
    pnl: dict[str, Decimal] = {}
    for (account, currency), amount in ctx.ledger.income(since=day).items():
        if account.startswith(PNL_ACCOUNTS):
            pnl[currency] = pnl.get(currency, Decimal(0)) - amount
    return pnl


def status_value(value) -> str:
    """One status value as the table shows it."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={status_value(v)}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)
