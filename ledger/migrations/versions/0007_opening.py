"""The opening: when an environment first reached its broker, and what the account held then.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

The table definition below is a frozen copy of the engine's table as it stood at this revision.
"""

from alembic import op
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

metadata = MetaData()

opening = Table(
    "opening", metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(64), nullable=False, unique=True),  # one opening per broker account
    Column("taken_at", String(26), nullable=False),  # the opening snapshot's time (the broker's)
    Column("recorded_at", String(26), nullable=False),
    Column("snapshot_id", BigInteger, nullable=False),
    Column("txn_id", BigInteger),  # the opening entry; NULL when the account held nothing to book
    Column("source", String(32), nullable=False),  # init | reconcile | submit | ...
    Column("held", Text, nullable=False),  # JSON: what the broker held and what was booked
)


def upgrade() -> None:
    metadata.create_all(op.get_bind(), tables=[opening])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
