"""`status` on the read path: an environment at a glance without SQLAlchemy, pydantic, pandas or
alembic, or None where only the full path (engine/ops/status.py) can vouch for the answer.

The full path opens the environment (config.toml checked by pydantic models, the schema, identity
and base currency), builds the session and its broker and reads through SQLAlchemy: about a second
of imports for a page of rows. This path opens it as the read commands do (engine/setup/quick.py:
config.toml as checked before, the database on its raw DB-API connection, one read transaction)
and reads the same rows with fixed SQL (ledger/reading.py, engine/trust/reading.py,
engine/targets/run_state.py). The environment's clock is the simulated exchange's on sim, opened
as the session opens it (its commissions set from config.toml), else the wall clock; a broker
probe reaches only the embedded simulator (IB is left to the full path, with ib_async).

The caller's `net_today(opened, today)` (reports: today's P&L in the base currency from the
maintained tables) may answer None; then so does this, and the full path replays. It is asked
before the broker is probed, because a probe can consume one of the simulator's pending faults
(SimBroker.connect), which the full path would then consume again: everything before the probe
only reads or sets what the full path sets the same way again.
tests/test_status_quick.py holds the result equal to the full path's on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from tradeledger.engine.setup import quick
from tradeledger.engine.targets.run_state import latest_run_state, max_run_age_hours
from tradeledger.engine.trust import reading as trust
from tradeledger.ledger.reading import shown_url

UTC = dt.timezone.utc
PNL_ACCOUNTS = ("Income:Trading:", "Expenses:Commissions:")  # engine/ops/status.py's, a test holds them equal
HEARTBEAT = ("at", "state", "last_job", "last_result")


def quick_status(home: str | Path | None, env: str, db_url: str | None, probe_broker: bool,
                 net_today: Callable[[quick.ReadEnvironment, dt.date], Decimal | int | None]) -> dict | None:
    """Everything `tradeledger status` shows, in its order, or None: take the full path."""
    opened = quick.open_for_reading(home, env, db_url)
    if opened is None:
        return None
    exchange = None
    try:
        broker = str(opened.raw["environment"].get("broker", ""))
        shown = shown_url(opened.url)
        if shown is None or (probe_broker and broker != "sim"):
            return None  # an unusual URL to show, or IB to reach: the full path
        failure: Exception | None = None
        now = None
        if broker == "sim":
            try:
                exchange = _open_exchange(opened)
                now = exchange.now()
            except Exception as exc:  # noqa: BLE001 - as the session: no exchange, the wall clock
                failure = exc
        now = now or dt.datetime.now(UTC)
        today = now.date()
        try:
            info = _ledger(opened, shown, broker)
            later = _operations(opened, now)
            net = net_today(opened, today)
            if net is None:
                return None
            later["pnl_today"] = {"date": today.isoformat(), **pnl_since(opened, today),
                                  f"net ({opened.base_currency})": net}
        except Exception:  # noqa: BLE001 - a read that failed: the full path says what is wrong, in its words
            return None
        if not probe_broker:
            info["broker_reachable"] = "not checked"
        else:  # the last step: the full path would consume a pending fault again
            try:
                if failure is not None:
                    raise failure
                from tradeledger.broker.simstore import connect

                connect(exchange)  # SimBroker.connect
                info["broker_reachable"] = True
            except Exception as exc:  # reachable or not is the answer, not an error
                info["broker_reachable"] = False
                info["broker_error"] = f"{type(exc).__name__}: {exc}"
        return info | later
    finally:
        if exchange is not None:
            exchange.close()
        opened.close()


def _open_exchange(opened: quick.ReadEnvironment):
    """The simulated exchange's file as the session opens it (session.open_sim_exchange): its clock,
    commissions and faults (broker/simstore.py), without the market and orders on top."""
    from tradeledger.broker.simstore import SimStore
    from tradeledger.engine.setup.names import sim_commissions

    per_contract, per_share, shares = sim_commissions(opened.raw)
    return SimStore.configured(opened.dir / "sim.db", opened.account, per_contract, per_share, shares)


def _ledger(opened: quick.ReadEnvironment, shown: str, broker: str) -> dict:
    """Identity, database and the ledger's size (status.environment_status)."""
    reader = opened.reader
    txns, postings = reader.count()
    ledger_path = opened.dir / "ledger.beancount"
    return {"environment": opened.env, "account": opened.account, "broker": broker, "database": shown,
            "schema_revision": reader.revision(), "accounts": len(reader.account_names()), "transactions": txns,
            "postings": postings, "ledger_file": str(ledger_path) if ledger_path.exists() else None}


def _operations(opened: quick.ReadEnvironment, now: dt.datetime) -> dict:
    """Opening, snapshot, reconciliation, exceptions, locks, target run, daemon (status.operations_status)."""
    reader, account = opened.reader, opened.account
    info = {"opening": trust.opening_status(reader, account), "last_snapshot": trust.latest_snapshot(reader, account),
            "last_reconciliation": trust.last_reconciliation(reader), "open_exceptions": trust.open_counts(reader),
            "locks": trust.active_locks(reader),
            "latest_target_run": latest_run_state(reader, now, max_run_age_hours(opened.raw))}
    beat = None
    for row in reader.rows(f"SELECT {', '.join(HEARTBEAT)} FROM daemon_heartbeat WHERE env = ?", (opened.env,)):
        beat = dict(zip(HEARTBEAT, row))
    info["daemon_heartbeat"] = "never" if beat is None else beat
    return info


def pnl_since(opened: quick.ReadEnvironment, day: dt.date) -> dict[str, Decimal]:
    """Trading income less commissions booked from `day` on, per currency (status.pnl_since)."""
    from tradeledger.ledger.numbers import from_scaled

    names = opened.reader.account_names()
    pnl: dict[str, Decimal] = {}
    for account_id, currency, units in opened.reader.sums_since(
            [i for i, name in names.items() if name.startswith(PNL_ACCOUNTS)], day.isoformat()):
        if units != 0:  # Ledger.income leaves a zero sum out
            pnl[currency] = pnl.get(currency, Decimal(0)) - from_scaled(units)
    return pnl
