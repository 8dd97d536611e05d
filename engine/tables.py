"""The engine's tables: prices, forecasts, target runs, orders, fills and position marks.

Created by migration 0002 (in the single Alembic chain under `ledger/migrations`); these Core
objects mirror it. Money, prices and quantities are BIGINT nano-units like the ledger's
(`ledger/numbers.py`); forecasts are unitless and stored as decimal text. Times are UTC text in
the ledger's format, dates ISO text.

What is fact and what is state:
- `price_bar`, `settlement`, `fx_rate`, `forecast`: imported or computed facts, one row per key;
- `target_run` + `target_line`: an immutable snapshot; only the run's review state moves, once,
  from pending to approved or rejected;
- `broker_order` (+ `order_alloc`, `internal_cross`): recorded before anything is sent; its
  state follows the broker's reports;
- `fill` (+ `fill_alloc`): one row per execution (keyed by account and the execution id without
  its correction suffix), with the ledger entries that booked it;
- `position_mark`: the price each holder's position in a contract was last marked at, written in
  the same database transaction as the ledger entry that moved it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

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
