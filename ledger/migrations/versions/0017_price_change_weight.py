"""The price-change log is pruned: `price_change.n`, how many changes a row stands for.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

`price_change` (0015) was insert-only and grew by a row for every price, settlement or FX rate
stored, forever. A checkpoint of the trader's curves at day D needs of it only that the changes
dated on or before D add up to what they did when it was counted. So the rows dated on or before
the oldest stored checkpoint's day can be folded into one, which stands for all of them (`n`):
every sum a stored or future checkpoint compares is the same (reports/series_checkpoint.py
`prune`, in the transaction that writes the checkpoints). A checkpoint now keeps the sum of `n`
on or before its day, not the count of rows; a row the triggers insert stands for one change (the
default), so that the sums of rows written before this revision are their counts.

The index on `day` becomes one on (`day`, `n`): the sum is read from the index alone, as the count was.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("price_change", sa.Column("n", sa.BigInteger, nullable=False, server_default="1"))
    op.drop_index("ix_price_change_day", "price_change")
    op.create_index("ix_price_change_day_n", "price_change", ["day", "n"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
