"""The engine's tables: prices, forecasts, target runs, orders, fills, position marks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Created from `engine/tables.py` as it stood at this revision; a later change to those tables
gets a migration of its own.
"""

from alembic import op
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("price_bar", "settlement", "fx_rate", "forecast", "target_run", "target_line", "broker_order",
          "order_alloc", "internal_cross", "fill", "fill_alloc", "position_mark")


# The tables exactly as they stood at this revision (frozen: never import the live ones).
metadata = MetaData()

price_bar = Table(
    "price_bar", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("close", BigInteger, nullable=False),
)

settlement = Table(
    "settlement", metadata,
    Column("contract", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("price", BigInteger, nullable=False),
)

fx_rate = Table(
    "fx_rate", metadata,
    Column("currency", String(16), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("rate", BigInteger, nullable=False),  # base currency per one unit of `currency`
)

forecast = Table(
    "forecast", metadata,
    Column("strategy", String(64), primary_key=True),
    Column("instrument", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("value", String(40), nullable=False),
    Column("source", String(16), nullable=False),  # rule | import
)

target_run = Table(
    "target_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", String(26), nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("state", String(16), nullable=False),  # pending | approved | rejected
    Column("reviewed_at", String(26)),
    Column("reviewed_by", String(64)),
    Column("review_note", Text),
    Column("inputs", Text, nullable=False),  # JSON: config and prices the run was computed from
)

target_line = Table(
    "target_line", metadata,
    Column("run_id", Integer, primary_key=True),
    Column("strategy", String(64), primary_key=True),
    Column("instrument", String(64), primary_key=True),
    Column("contract", String(64), nullable=False),
    Column("current", BigInteger, nullable=False),
    Column("target", BigInteger, nullable=False),
    Column("explain", Text, nullable=False),  # JSON: every figure the target came from
)

broker_order = Table(
    "broker_order", metadata,
    Column("id", Integer, primary_key=True),
    Column("order_ref", String(64), nullable=False, unique=True),
    Column("run_id", Integer),
    Column("contract", String(64), nullable=False),
    Column("contract_spec", Text, nullable=False),  # JSON of the broker Contract sent
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("order_type", String(8), nullable=False),
    Column("limit_price", BigInteger),
    Column("state", String(16), nullable=False),  # planned, sent, partial, filled, cancelled, rejected
    Column("filled", BigInteger, nullable=False, server_default="0"),
    Column("broker_order_id", BigInteger),
    Column("perm_id", BigInteger),
    Column("reason", Text),
    Column("created_at", String(26), nullable=False),
    Column("sent_at", String(26)),
)

order_alloc = Table(
    "order_alloc", metadata,
    Column("order_id", Integer, primary_key=True),
    Column("strategy", String(64), primary_key=True),
    Column("quantity", BigInteger, nullable=False),  # the strategy's share of the order, unsigned
)

internal_cross = Table(
    "internal_cross", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("contract", String(64), nullable=False),
    Column("seller", String(64), nullable=False),
    Column("buyer", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("txn_id", BigInteger),
)

fill = Table(
    "fill", metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(32), nullable=False),
    Column("exec_key", String(96), nullable=False),  # execution id without its correction suffix
    Column("exec_id", String(96), nullable=False),  # the version booked
    Column("order_id", Integer),
    Column("order_ref", String(64), nullable=False, server_default=""),
    Column("contract", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("time", String(26), nullable=False),
    Column("commission", BigInteger),  # NULL while pending
    Column("commission_currency", String(16)),
    Column("txn_id", BigInteger, nullable=False),
    Column("commission_txn_id", BigInteger),
    Column("superseded_by", Integer),  # a corrected execution's replacement fill
)

fill_alloc = Table(
    "fill_alloc", metadata,
    Column("fill_id", Integer, primary_key=True),
    Column("holder", String(64), primary_key=True),  # strategy component, or "" for unattributed
    Column("quantity", BigInteger, nullable=False),  # signed
)

position_mark = Table(
    "position_mark", metadata,
    Column("holder", String(64), primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("time", String(26), nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])
    op.create_index("ix_fill_exec_key", "fill", ["account", "exec_key"], unique=False)
    op.create_index("ix_fill_order", "fill", ["order_id"])
    op.create_index("ix_order_run", "broker_order", ["run_id"])
    # The engine asks "who holds this contract" on every fill: a commodity-first covering index.
    op.create_index("ix_posting_commodity", "posting", ["commodity", "account_id", "units"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
