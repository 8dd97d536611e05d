"""Reconciliation: broker snapshots, reconciliation results, exceptions and instrument locks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

The table definitions below are frozen copies of the engine's tables as they stood at this
revision; a later change to a table gets a migration of its own.
"""

from alembic import op
from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text, text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("broker_snapshot", "snapshot_position", "snapshot_cash", "snapshot_order", "reconciliation",
          "tl_exception", "instrument_lock")


# The tables exactly as they stood at this revision (frozen: never import the live ones).
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


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])
    op.create_index("ix_snapshot_account", "broker_snapshot", ["account", "id"])
    op.create_index("ix_reconciliation_run", "reconciliation", ["id", "clean"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
