"""`order_alloc.strategy` is named for what it holds: `holder` (a strategy's account component,
"" for the unattributed holder), as `fill_alloc.holder` and `position_mark.holder` are.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30

Only a column's name changes; no table is created, so there is no frozen copy to carry. Both
backends rename in place (SQLite 3.25+ and PostgreSQL: ALTER TABLE ... RENAME COLUMN), keeping the
rows, the primary key and the index.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE order_alloc RENAME COLUMN strategy TO holder")


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
