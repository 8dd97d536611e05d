"""Reconciliation's tables: broker snapshots, reconciliation results, exceptions and locks.

Created by migration 0003; these Core objects mirror it. Quantities and money are BIGINT
nano-units like the ledger's (`ledger/numbers.py`); times are UTC text in the ledger's format.

What is fact and what is state:
- `broker_snapshot` (+ `snapshot_position`, `snapshot_cash`, `snapshot_order`): what the broker
  said at one moment, written once. A failed snapshot is a row with status `failed` and its
  error and no positions: it is never read as "flat".
- `reconciliation`: one row per reconciliation, with the snapshot it compared and its result
  as JSON (the same JSON `tradeledger reconcile --json` prints).
- `tl_exception`: typed exceptions with a lifecycle open -> acknowledged -> resolved; at most
  one open (or acknowledged) row per dedupe key, enforced by a partial unique index.
- `instrument_lock`: a lock per (instrument or contract, exception); active while
  `unlocked_at` is NULL. Orders for a locked key are refused with the lock's reason.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text, text

metadata = MetaData()

broker_snapshot = Table(
    "broker_snapshot", metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(32), nullable=False),
    Column("taken_at", String(26), nullable=False),  # the broker's time (our clock if it failed)
    Column("recorded_at", String(26), nullable=False),
    Column("status", String(8), nullable=False),  # ok | failed
    Column("error", Text),
    Column("positions", Integer, nullable=False, server_default="0"),
)

snapshot_position = Table(
    "snapshot_position", metadata,
    Column("snapshot_id", Integer, primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("contract_spec", Text, nullable=False),  # JSON of the broker Contract
    Column("quantity", BigInteger, nullable=False),
    Column("avg_cost", BigInteger, nullable=False),
)

snapshot_cash = Table(
    "snapshot_cash", metadata,
    Column("snapshot_id", Integer, primary_key=True),
    Column("currency", String(16), primary_key=True),
    Column("cash", BigInteger, nullable=False),
    Column("unsettled", BigInteger, nullable=False),
)

snapshot_order = Table(
    "snapshot_order", metadata,
    Column("snapshot_id", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("order_ref", String(64), nullable=False),
    Column("broker_order_id", BigInteger),
    Column("contract", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("filled", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
)

reconciliation = Table(
    "reconciliation", metadata,
    Column("id", Integer, primary_key=True),
    Column("snapshot_id", Integer),
    Column("run_at", String(26), nullable=False),
    Column("clean", Integer, nullable=False),  # 1 clean, 0 not
    Column("breaks", Integer, nullable=False),
    Column("result", Text, nullable=False),  # JSON
)

tl_exception = Table(
    "tl_exception", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("detail", Text, nullable=False),
    Column("dedupe_key", String(250), nullable=False),
    Column("state", String(16), nullable=False),  # open | acknowledged | resolved
    Column("first_seen", String(26), nullable=False),
    Column("last_seen", String(26), nullable=False),
    Column("count", Integer, nullable=False),
    Column("acknowledged_at", String(26)),
    Column("acknowledged_by", String(64)),
    Column("acknowledged_why", Text),
    Column("resolved_at", String(26)),
    Column("resolved_by", String(64)),
    Column("resolved_why", Text),
)
Index("ux_exception_open_key", tl_exception.c.dedupe_key, unique=True,
      sqlite_where=text("state != 'resolved'"), postgresql_where=text("state != 'resolved'"))
Index("ix_exception_state", tl_exception.c.state)

instrument_lock = Table(
    "instrument_lock", metadata,
    Column("id", Integer, primary_key=True),
    Column("lock_key", String(64), nullable=False),  # instrument name or contract code
    Column("reason", Text, nullable=False),
    Column("exception_id", Integer),
    Column("locked_at", String(26), nullable=False),
    Column("unlocked_at", String(26)),
    Column("unlocked_by", String(64)),
    Column("unlock_why", Text),
)
Index("ix_lock_active", instrument_lock.c.lock_key, instrument_lock.c.unlocked_at)

TABLES = ("broker_snapshot", "snapshot_position", "snapshot_cash", "snapshot_order", "reconciliation",
          "tl_exception", "instrument_lock")
