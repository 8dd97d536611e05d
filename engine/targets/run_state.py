"""A target run's state as it stands, decided on plain values, and the newest run's read on a raw
DB-API connection (ledger/reading.py's `Reader`) for `status` on the read path without SQLAlchemy
or pandas (engine/targets/runs.py imports both; it takes the rule from here).

A run is `pending` until reviewed once, to `approved` or `rejected`. Derived from the clock and the
newer runs, it is also `superseded` (a newer run exists) or `expired` (older than
`portfolio.max_run_age_hours`): rejected stays rejected; otherwise superseded, then expired, win
over the review state.
"""

from __future__ import annotations

import datetime as dt
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


def max_run_age_hours(raw: dict) -> Decimal:
    """`portfolio.max_run_age_hours` of a config.toml already checked (parse_trading_config
    accepted it), read as the trading config reads it."""
    value = raw.get("portfolio", {}).get("max_run_age_hours", DEFAULT_MAX_RUN_AGE_HOURS)
    return to_decimal(str(value) if isinstance(value, float) else value, "portfolio.max_run_age_hours")


def latest_run_state(reader: Reader, now: dt.datetime, max_age_hours: Decimal) -> dict | None:
    """The newest run as `status` shows it (id, as_of, its state as it stands), or None: no run
    (runs.latest_run)."""
    for run_id, created_at, as_of, state in reader.rows(
            "SELECT id, created_at, as_of, state FROM target_run ORDER BY id DESC LIMIT 1"):
        created = dt.datetime.fromisoformat(created_at).replace(tzinfo=UTC)  # store.parse_ts
        return {"id": run_id, "as_of": dt.date.fromisoformat(as_of),
                "state": run_status(state, created, False, now, max_age_hours)}
    return None
