"""What `status` shows of trust, read on a raw DB-API connection (ledger/reading.py's `Reader`).

The opening, the newest snapshot and reconciliation, the open exceptions and the active locks: the
same answers as `opening.opening_status`, `snapshots.latest_snapshot`, `reconcile.last_reconciliation`,
`exceptions.open_counts` and `exceptions.active_locks`, for `status` on the read path without
SQLAlchemy (engine/setup/quick.py). Each is one statement of a row or a handful. The words they are
shown in (the opening's summary, the severities and open states) live here, and the SQLAlchemy
modules take them from here, so that the two paths cannot say it differently; tests/test_status_quick.py
holds the whole of `status` equal on both.
"""

from __future__ import annotations

import json

from tradeledger.ledger.reading import Reader
from tradeledger.ledger.times import table_time

SEVERITIES = ("info", "warning", "error", "critical")  # in increasing order
OPEN_STATES = ("open", "acknowledged")
NO_OPENING = "none yet: taken when the broker is first reached (nothing is sent before it)"


def opening_summary(taken_at: str, source: str, held: dict, txn_id: int | None) -> str:
    """One line for `status` and `init`: when the opening was taken, and what it held."""
    positions = [f"{p['broker']} {p['contract']}" for p in held.get("positions", [])]
    cash = [f"{c['broker']} {c['currency']}" for c in held.get("cash", []) if c["broker"] not in ("0", "0.00")]
    parts = [f"taken {table_time(taken_at)} UTC ({source})",
             f"positions: {', '.join(positions) or 'none'}", f"cash: {', '.join(cash) or 'none'}"]
    if held.get("skipped"):
        parts.append(f"not booked: {', '.join(s['contract'] for s in held['skipped'])}")
    parts.append(f"entry {txn_id}" if txn_id else "nothing to book")
    return "; ".join(parts)


def opening_status(reader: Reader, account: str) -> str:
    for taken_at, source, held, txn_id in reader.rows(
            "SELECT taken_at, source, held, txn_id FROM opening WHERE account = ? ORDER BY id LIMIT 1", (account,)):
        return opening_summary(taken_at, source, json.loads(held), txn_id)
    return NO_OPENING


def latest_snapshot(reader: Reader, account: str) -> dict | None:
    for row in reader.rows("SELECT id, account, taken_at, recorded_at, status, error, positions FROM broker_snapshot "
                           "WHERE account = ? ORDER BY id DESC LIMIT 1", (account,)):
        return dict(zip(("id", "account", "taken_at", "recorded_at", "status", "error", "positions"), row))
    return None


def last_reconciliation(reader: Reader) -> dict | None:
    for id_, run_at, clean, breaks, snapshot in reader.rows(
            "SELECT id, run_at, clean, breaks, snapshot_id FROM reconciliation ORDER BY id DESC LIMIT 1"):
        return {"id": id_, "run_at": run_at, "clean": bool(clean), "breaks": breaks, "snapshot": snapshot}
    return None


def open_counts(reader: Reader) -> dict[str, int]:
    """{severity: number of open or acknowledged exceptions}, every severity present."""
    counts = dict(reader.rows(f"SELECT severity, COUNT(*) FROM tl_exception WHERE state IN "
                              f"({', '.join('?' * len(OPEN_STATES))}) GROUP BY severity", OPEN_STATES))
    return {s: int(counts.get(s, 0)) for s in SEVERITIES}


def active_locks(reader: Reader) -> dict[str, str]:
    """{instrument or contract: reason} for every active lock (reasons of one key joined)."""
    result: dict[str, str] = {}
    for key, reason in reader.rows("SELECT lock_key, reason FROM instrument_lock WHERE unlocked_at IS NULL "
                                   "ORDER BY id"):
        result[key] = f"{result[key]}; {reason}" if key in result else reason
    return result
