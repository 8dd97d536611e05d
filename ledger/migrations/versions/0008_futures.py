"""Futures through their life: roll states, broker contract details, spread legs, per-contract
closes, the back-adjusted series and the rolls that made it, expiry settlements.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

The table definitions below are frozen copies of the engine's tables as they stood at this
revision; a later change to a table gets a migration of its own.
"""

from alembic import op
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("roll_state", "contract_detail", "order_leg", "contract_bar", "roll_event", "adjusted_price")

metadata = MetaData()

roll_state = Table(
    "roll_state", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("set_by", String(64), nullable=False),
    Column("set_at", String(26), nullable=False),
    Column("note", Text),
)

contract_detail = Table(
    "contract_detail", metadata,
    Column("code", String(64), primary_key=True),
    Column("instrument", String(64), nullable=False),
    Column("last_trade_date", String(10)),
    Column("real_expiration", String(10)),
    Column("con_id", BigInteger),
    Column("source", String(16), nullable=False),
    Column("fetched_at", String(26), nullable=False),
)

order_leg = Table(
    "order_leg", metadata,
    Column("order_id", Integer, primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("side", String(4), nullable=False),
    Column("ratio", Integer, nullable=False),
    Column("filled", BigInteger, nullable=False, server_default="0"),
    Column("contract_spec", Text, nullable=False),
)

contract_bar = Table(
    "contract_bar", metadata,
    Column("contract", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("close", BigInteger, nullable=False),
)

roll_event = Table(
    "roll_event", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("old", String(64), primary_key=True),
    Column("new", String(64), nullable=False),
    Column("date", String(10), nullable=False),
    Column("run_id", Integer),
)

adjusted_price = Table(
    "adjusted_price", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("contract", String(64), nullable=False),
    Column("raw", BigInteger, nullable=False),
    Column("adjustment", BigInteger, nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
