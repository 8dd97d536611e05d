"""Corporate actions (dividends and splits, with the ledger entries that booked them) and the
imported target weights of allocation strategies.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

The table definitions below are frozen copies of the engine's tables as they stood at this revision.
"""

from alembic import op
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

metadata = MetaData()

corporate_action = Table(
    "corporate_action", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("ticker", String(64), nullable=False),
    Column("ex_date", String(10), nullable=False),
    Column("pay_date", String(10)),
    Column("amount", BigInteger),
    Column("currency", String(16)),
    Column("withholding", String(40)),
    Column("ratio_new", BigInteger),
    Column("ratio_old", BigInteger),
    Column("source", String(16), nullable=False),
    Column("ref", String(96), nullable=False, server_default=""),
    Column("created_at", String(26), nullable=False),
    Column("ex_txn_id", BigInteger),
    Column("pay_txn_id", BigInteger),
)

target_weight = Table(
    "target_weight", metadata,
    Column("strategy", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("ticker", String(64), primary_key=True),
    Column("weight", String(40), nullable=False),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind(), tables=[corporate_action, target_weight])
    op.create_index("ix_corporate_action_ticker", "corporate_action", ["ticker", "ex_date"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
