"""A reconciliation records when it was written by the database's clock: `reconciliation.written_at`.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

`run_at` is the environment's clock (the simulated exchange's on sim: the trading world's time the
reconciliation compared the books at) of whichever process reconciled, the daemon or a
`tradeledger reconcile` on any host. The health endpoint's `tradeledger_reconciliation_age_seconds`
subtracted it from the daemon host's wall clock: on a sim environment whose exchange's clock is
days from the machine's, or with a reconciliation run on a host minutes off, the age was days, or
negative, or minutes wrong. `written_at` is the database's clock (ledger/dbclock.py), stamped by the
statement that inserts the row, and the age is measured against that clock read in the query that
reads it. Rows written before this revision take their `run_at` (the only time they have).
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reconciliation", sa.Column("written_at", sa.String(26)))
    op.execute("UPDATE reconciliation SET written_at = run_at")


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
