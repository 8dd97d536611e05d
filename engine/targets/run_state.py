"""A target run's state as it stands, decided on plain values, and the newest run's read on a raw
DB-API connection (ledger/reading.py's `Reader`) for `status` on the read path without SQLAlchemy
or pandas (engine/targets/runs.py imports both; it takes the rule from here).

A run is `pending` until reviewed once, to `approved` or `rejected`. Derived from the clock and the
newer runs, it is also `superseded` (a newer run exists) or `expired` (older than
`portfolio.max_run_age_hours`): rejected stays rejected; otherwise superseded, then expired, win
over the review state.

**Superseded, said.** A newer run supersedes the run before it, whatever its review: a run pending
review can no longer be approved, and an approved run not executed yet (no plan recorded) can no
longer be executed: a person's approval is discarded. `supersession` says which of the two the
newest run did, in one sentence ("run 4 superseded by run 5 (it was approved by alice, not
executed)"), for every place that says it: the daemon's targets job and its log, `cycle`,
`targets list`, `status` (raw read path and full), and the `approval_discarded` exception an
unattended computation raises for an approval it discarded (engine/targets/runs.py). A run rejected,
or executed, is superseded without a word: nothing of a person's is lost.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tradeledger.ledger.numbers import to_decimal
from tradeledger.ledger.reading import Reader

UTC = dt.timezone.utc
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
DEFAULT_MAX_RUN_AGE_HOURS = 24


def run_status(state: str, created_at: dt.datetime, superseded: bool, now: dt.datetime,
               max_age_hours: Decimal) -> str:
    """rejected stays rejected; otherwise superseded, then expired, win over the review state."""
    if state == REJECTED:
        return REJECTED
    if superseded:
        return "superseded"
    if now - created_at > dt.timedelta(hours=float(max_age_hours)):
        return "expired"
    return state


# A run is executed once its plan is recorded (engine/trading/orders.is_planned reads the same tables).
EXECUTED_SQL = ("SELECT run_id FROM run_plan WHERE run_id = ? UNION SELECT run_id FROM broker_order WHERE run_id = ? "
                "UNION SELECT run_id FROM internal_cross WHERE run_id = ?")
EXECUTED_RUNS_SQL = ("SELECT run_id FROM run_plan UNION SELECT run_id FROM broker_order WHERE run_id IS NOT NULL "
                     "UNION SELECT run_id FROM internal_cross")
_BEFORE_SQL = "SELECT id, created_at, state, reviewed_by FROM target_run WHERE id < ? ORDER BY id DESC LIMIT 1"


@dataclass(frozen=True)
class Superseded:
    """What a new run did to the run before it, when that run was still to be reviewed or executed."""

    run: int
    by: int
    state: str  # pending | approved (as reviewed)
    reviewed_by: str | None
    expired: bool  # past max_run_age_hours when it was superseded: it could not have been executed anyway

    @property
    def discards_approval(self) -> bool:
        """A person's (or an unattended cycle's) approval of a run that could still be executed, gone."""
        return self.state == APPROVED and not self.expired

    def describe(self) -> str:
        was = "pending review" if self.state == PENDING else f"approved by {self.reviewed_by or 'unknown'}"
        return (f"run {self.run} superseded by run {self.by} (it was {was}, not executed"
                f"{', and already expired' if self.expired else ''})")


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)  # store.parse_ts


def superseded(before_id: int, created_at: dt.datetime, state: str, reviewed_by: str | None, executed: bool,
               by: int, by_created: dt.datetime, max_age_hours: Decimal) -> Superseded | None:
    """What run `by` (created `by_created`) did to run `before_id`, the run before it (pure): None
    when that run was rejected or executed (nothing to say)."""
    if state == REJECTED or executed:
        return None
    expired = by_created - created_at > dt.timedelta(hours=float(max_age_hours))
    return Superseded(before_id, by, state, reviewed_by, expired)


def supersession(rows, run_id: int, created_at: dt.datetime, max_age_hours: Decimal) -> Superseded | None:
    """What run `run_id` did to the run before it; `rows(sql, params)` runs `?`-placeholder SQL on
    either read path (ledger/reading.Reader.rows, or `sql_rows` of a SQLAlchemy connection)."""
    for before_id, before_created, state, reviewed_by in rows(_BEFORE_SQL, (run_id,)):
        executed = any(True for _ in rows(EXECUTED_SQL, (before_id, before_id, before_id)))
        return superseded(before_id, _ts(before_created), state, reviewed_by, executed, run_id, created_at,
                          max_age_hours)
    return None


def sql_rows(conn):
    """`rows(sql, params)` on a SQLAlchemy connection, for SQL written with `?` placeholders."""
    def rows(sql: str, params: tuple = ()):
        if conn.dialect.name != "sqlite":
            sql = sql.replace("%", "%%").replace("?", "%s")
        return conn.exec_driver_sql(sql, params).all()
    return rows


def max_run_age_hours(raw: dict) -> Decimal:
    """`portfolio.max_run_age_hours` of a config.toml already checked (parse_trading_config
    accepted it), read as the trading config reads it."""
    value = raw.get("portfolio", {}).get("max_run_age_hours", DEFAULT_MAX_RUN_AGE_HOURS)
    return to_decimal(str(value) if isinstance(value, float) else value, "portfolio.max_run_age_hours")


def latest_run_state(reader: Reader, now: dt.datetime, max_age_hours: Decimal) -> dict | None:
    """The newest run as `status` shows it (id, as_of, its state as it stands, and the run it
    superseded before it was executed, in words, or None), or None: no run (runs.latest_run)."""
    for run_id, created_at, as_of, state in reader.rows(
            "SELECT id, created_at, as_of, state FROM target_run ORDER BY id DESC LIMIT 1"):
        created = _ts(created_at)
        return status_entry(run_id, dt.date.fromisoformat(as_of), run_status(state, created, False, now, max_age_hours),
                            supersession(reader.rows, run_id, created, max_age_hours))
    return None


def status_entry(run_id: int, as_of: dt.date, state: str, before: Superseded | None) -> dict:
    """`status`'s latest_target_run, one shape for both read paths."""
    return {"id": run_id, "as_of": as_of, "state": state, "supersedes": before.describe() if before else None}
