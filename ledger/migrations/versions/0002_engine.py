"""The engine's tables: prices, forecasts, target runs, orders, fills, position marks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Created from `engine/tables.py` as it stood at this revision; a later change to those tables
gets a migration of its own.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("price_bar", "settlement", "fx_rate", "forecast", "target_run", "target_line", "broker_order",
          "order_alloc", "internal_cross", "fill", "fill_alloc", "position_mark")


def upgrade() -> None:
    from tradeledger.engine import tables

    bind = op.get_bind()
    tables.metadata.create_all(bind, tables=[tables.metadata.tables[name] for name in TABLES])
    op.create_index("ix_fill_exec_key", "fill", ["account", "exec_key"], unique=False)
    op.create_index("ix_fill_order", "fill", ["order_id"])
    op.create_index("ix_order_run", "broker_order", ["run_id"])
    # The engine asks "who holds this contract" on every fill: a commodity-first covering index.
    op.create_index("ix_posting_commodity", "posting", ["commodity", "account_id", "units"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
