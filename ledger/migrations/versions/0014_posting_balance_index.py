"""The posting index on (account, commodity, units) is dropped: since 0011 no query needs it, and
every posting paid for it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

It was the balances' index, from when a balance was a sum over postings. Balances are maintained
rows now (0011, 0012); what still reads postings finds them by account through
`ix_posting_period` (account, time, commodity, units: the income, a balance as of a time, the
commodities an account ever held) or by commodity through `ix_posting_commodity` (the whole
ledger grouped by account and commodity, as `db verify` sums it: a GROUP BY is served by an index
on the same columns in any order). EXPLAIN QUERY PLAN of each such query before and after names
no other index and no new table scan.

On SQLite, writing a fill's postings with this index cost about twice what it costs without it
(raw sqlite3, the real schema and triggers, CPU time: 1.5-2.0 s against 0.8-1.1 s for 10,000
five-posting entries; bench/README.md).
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_posting_balance", table_name="posting")


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
