"""The ledger's tables, as SQLAlchemy Core objects for queries.

The schema itself is created and changed only by the Alembic migrations in
`ledger/migrations/versions/`; these objects mirror the latest revision so that queries are
written once for SQLite and PostgreSQL.

Numbers are BIGINT nano-units (see `numbers.py`). Times are UTC text `YYYY-MM-DD HH:MM:SS.ffffff`
so that they sort and compare as strings on both backends, and a date prefix (`'2026-12-02'`)
is a valid bound.

The rules that keep the ledger sound live in the database (see the migration):
- a posting must be inserted before its transaction header (the posting's foreign key is
  deferred, so postings without a header cannot be committed);
- inserting the header checks that the postings balance per currency (SUM of weights is 0),
  and no posting can be added to a transaction once its header exists;
- each posting's weight must equal units x cost (or x price, or the units), checked exactly in
  integer arithmetic by a CHECK constraint;
- transactions and postings can be neither updated nor deleted.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, MetaData, String, Table, Text

metadata = MetaData()

meta = Table(
    "tl_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

account = Table(
    "account", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("open_date", String(10), nullable=False),
    Column("close_date", String(10)),
    Column("currencies", Text, nullable=False, server_default=""),
    Column("booking", String(8), nullable=False, server_default="STRICT"),
)

commodity = Table(
    "commodity", metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # future, share, currency, other
    Column("currency", String(16)),
    Column("multiplier", String(40), nullable=False, server_default="1"),
    Column("first_date", String(10), nullable=False),
    Column("meta", Text, nullable=False, server_default="{}"),
)

txn = Table(
    "txn", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", String(26), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("narration", Text, nullable=False),
    Column("links", Text, nullable=False, server_default=""),
    Column("meta", Text, nullable=False, server_default="{}"),
    Column("idem_key", String(255), unique=True),
    Column("fingerprint", String(32), nullable=False),
    Column("reverses_id", BigInteger, ForeignKey("txn.id"), unique=True),
    Column("booked_at", String(26), nullable=False),
)

posting = Table(
    "posting", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("txn_id", BigInteger, nullable=False),
    Column("ts", String(26), nullable=False),
    Column("account_id", Integer, ForeignKey("account.id"), nullable=False),
    Column("commodity", String(64), nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("cost", BigInteger),
    Column("cost_currency", String(64)),
    Column("cost_date", String(10)),
    Column("cost_label", String(128)),
    Column("price", BigInteger),
    Column("price_currency", String(64)),
    Column("weight", BigInteger, nullable=False),
    Column("weight_currency", String(64), nullable=False),
)

price = Table(
    "price", metadata,
    Column("commodity", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("currency", String(16), primary_key=True),
    Column("number", BigInteger, nullable=False),
)

# Maintained on SQLite by a trigger on posting (migration 0011), in the statement that inserts the posting
# (on PostgreSQL through per-transaction deltas, below):
# the sums of units per account and commodity, and per lot held at a cost, each in two parts
# (whole = SUM(units / 10^9), nanos = SUM(units % 10^9): exact, no 64-bit overflow). A lot's
# absent date or label is ''. ledger/maintained.py checks them against the postings.
balance = Table(
    "balance", metadata,
    Column("account_id", Integer, ForeignKey("account.id"), primary_key=True),
    Column("commodity", String(64), primary_key=True),
    Column("whole", BigInteger, nullable=False),
    Column("nanos", BigInteger, nullable=False),
)

lot_balance = Table(
    "lot_balance", metadata,
    Column("account_id", Integer, ForeignKey("account.id"), primary_key=True),
    Column("commodity", String(64), primary_key=True),
    Column("cost", BigInteger, primary_key=True),
    Column("cost_currency", String(64), primary_key=True),
    Column("cost_date", String(10), primary_key=True),
    Column("cost_label", String(128), primary_key=True),
    Column("whole", BigInteger, nullable=False),
    Column("nanos", BigInteger, nullable=False),
    Column("first_ts", String(26), nullable=False),
)

# PostgreSQL's way to the same sums (migration 0012; empty on SQLite): a statement trigger on
# posting adds each transaction's postings here under its own transaction id (no row another
# transaction writes, so bookers never wait on each other), and `tl_fold_balances()` moves the
# committed deltas into `balance` / `lot_balance`. A balance is its row plus its visible deltas.
balance_delta = Table(
    "balance_delta", metadata,
    Column("xid", BigInteger, primary_key=True),
    Column("account_id", Integer, primary_key=True),
    Column("commodity", String(64), primary_key=True),
    Column("whole", BigInteger, nullable=False),
    Column("nanos", BigInteger, nullable=False),
)

lot_delta = Table(
    "lot_delta", metadata,
    Column("xid", BigInteger, primary_key=True),
    Column("account_id", Integer, primary_key=True),
    Column("commodity", String(64), primary_key=True),
    Column("cost", BigInteger, primary_key=True),
    Column("cost_currency", String(64), primary_key=True),
    Column("cost_date", String(10), primary_key=True),
    Column("cost_label", String(128), primary_key=True),
    Column("whole", BigInteger, nullable=False),
    Column("nanos", BigInteger, nullable=False),
    Column("first_ts", String(26), nullable=False),
)
