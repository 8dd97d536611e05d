"""Reconciliation: broker snapshots, reconciliation results, exceptions and instrument locks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Created from `engine/tables_recon.py` as it stood at this revision; a later change to those
tables gets a migration of its own.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("broker_snapshot", "snapshot_position", "snapshot_cash", "snapshot_order", "reconciliation",
          "tl_exception", "instrument_lock")


def upgrade() -> None:
    from tradeledger.engine import tables_recon

    bind = op.get_bind()
    tables_recon.metadata.create_all(bind, tables=[tables_recon.metadata.tables[name] for name in TABLES])
    op.create_index("ix_snapshot_account", "broker_snapshot", ["account", "id"])
    op.create_index("ix_reconciliation_run", "reconciliation", ["id", "clean"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
