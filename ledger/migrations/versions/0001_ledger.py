"""The ledger: accounts, commodities, transactions, postings, prices, and the rules that keep it sound.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

The database refuses, whoever the caller:
- an unbalanced transaction: postings go in first (their foreign key to the header is
  deferred, so a commit with postings but no header fails), then inserting the header checks
  that the weights sum to zero per currency and that the postings carry the header's time;
- a posting added to a transaction that is already booked;
- a posting whose weight is not exactly units x cost (or x price, or the units): an integer
  identity on nano-units, exact and overflow-free for any storable weight;
- any UPDATE or DELETE of a booked transaction or posting (and TRUNCATE on PostgreSQL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

F = 1_000_000_000  # nano-units per unit; see ledger/numbers.py


def _exact_product(units: str, factor: str) -> str:
    """SQL true when weight = units * factor / F exactly, split to avoid 64-bit overflow."""
    uh, ul, fh, fl = f"({units} / {F})", f"({units} % {F})", f"({factor} / {F})", f"({factor} % {F})"
    return (
        f"({ul} * {fl} % {F} = 0 AND weight = {uh} * {fh} * {F} + {uh} * {fl} + {ul} * {fh}"
        f" + {ul} * {fl} / {F})"
    )


WEIGHT_RULE = (
    "(cost IS NULL AND price IS NULL AND weight = units AND weight_currency = commodity)"
    " OR (cost IS NOT NULL AND price IS NULL AND weight_currency = cost_currency AND "
    + _exact_product("units", "cost") + ")"
    " OR (price IS NOT NULL AND cost IS NULL AND weight_currency = price_currency AND "
    + _exact_product("units", "price") + ")"
)

APPEND_ONLY = "tradeledger: the ledger is append-only; book a reversal instead"
SEALED = "tradeledger: postings cannot be added to a booked transaction"
UNBALANCED = "tradeledger: transaction does not balance (or has no postings, or mixed times)"

_UNBALANCED_CONDITION = """
    NOT EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.id)
    OR EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.id
               GROUP BY weight_currency HAVING SUM(weight) <> 0)
    OR EXISTS (SELECT 1 FROM posting WHERE txn_id = NEW.id AND ts <> NEW.ts)
"""

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER txn_balanced AFTER INSERT ON txn WHEN {_UNBALANCED_CONDITION}
        BEGIN SELECT RAISE(ABORT, '{UNBALANCED}'); END""",
    f"""CREATE TRIGGER posting_sealed BEFORE INSERT ON posting
        WHEN EXISTS (SELECT 1 FROM txn WHERE id = NEW.txn_id)
        BEGIN SELECT RAISE(ABORT, '{SEALED}'); END""",
    f"CREATE TRIGGER txn_no_update BEFORE UPDATE ON txn BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
    f"CREATE TRIGGER txn_no_delete BEFORE DELETE ON txn BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
    f"CREATE TRIGGER posting_no_update BEFORE UPDATE ON posting BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
    f"CREATE TRIGGER posting_no_delete BEFORE DELETE ON posting BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END",
]

POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION tl_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$""",
    f"""CREATE FUNCTION tl_posting_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM txn WHERE id = NEW.txn_id) THEN RAISE EXCEPTION '{SEALED}'; END IF;
          RETURN NEW;
        END $$""",
    f"""CREATE FUNCTION tl_txn_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {_UNBALANCED_CONDITION} THEN RAISE EXCEPTION '{UNBALANCED}'; END IF;
          RETURN NULL;
        END $$""",
    "CREATE TRIGGER txn_balanced AFTER INSERT ON txn FOR EACH ROW EXECUTE FUNCTION tl_txn_balanced()",
    "CREATE TRIGGER posting_sealed BEFORE INSERT ON posting FOR EACH ROW EXECUTE FUNCTION tl_posting_sealed()",
    "CREATE TRIGGER txn_append_only BEFORE UPDATE OR DELETE ON txn FOR EACH ROW EXECUTE FUNCTION tl_refuse()",
    "CREATE TRIGGER posting_append_only BEFORE UPDATE OR DELETE ON posting FOR EACH ROW EXECUTE FUNCTION tl_refuse()",
    "CREATE TRIGGER txn_no_truncate BEFORE TRUNCATE ON txn FOR EACH STATEMENT EXECUTE FUNCTION tl_refuse()",
    "CREATE TRIGGER posting_no_truncate BEFORE TRUNCATE ON posting FOR EACH STATEMENT EXECUTE FUNCTION tl_refuse()",
    "CREATE SEQUENCE txn_id_seq",
]


def upgrade() -> None:
    op.create_table(
        "tl_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "account",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("open_date", sa.String(10), nullable=False),
        sa.Column("close_date", sa.String(10)),
        sa.Column("currencies", sa.Text, nullable=False, server_default=""),
        sa.Column("booking", sa.String(8), nullable=False, server_default="STRICT"),
    )
    op.create_table(
        "commodity",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(16)),
        sa.Column("multiplier", sa.String(40), nullable=False, server_default="1"),
        sa.Column("first_date", sa.String(10), nullable=False),
        sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "txn",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(26), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("narration", sa.Text, nullable=False),
        sa.Column("links", sa.Text, nullable=False, server_default=""),
        sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
        sa.Column("idem_key", sa.String(255), unique=True),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("reverses_id", sa.BigInteger, sa.ForeignKey("txn.id"), unique=True),
        sa.Column("booked_at", sa.String(26), nullable=False),
    )
    op.create_index("ix_txn_ts", "txn", ["ts"])
    op.create_table(
        "posting",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("txn_id", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.String(26), nullable=False),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("account.id"), nullable=False),
        sa.Column("commodity", sa.String(64), nullable=False),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("cost", sa.BigInteger),
        sa.Column("cost_currency", sa.String(64)),
        sa.Column("cost_date", sa.String(10)),
        sa.Column("cost_label", sa.String(128)),
        sa.Column("price", sa.BigInteger),
        sa.Column("price_currency", sa.String(64)),
        sa.Column("weight", sa.BigInteger, nullable=False),
        sa.Column("weight_currency", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["txn_id"], ["txn.id"], deferrable=True, initially="DEFERRED"),
        sa.CheckConstraint(WEIGHT_RULE, name="posting_weight_exact"),
        sa.CheckConstraint("units <> 0", name="posting_units_nonzero"),
    )
    op.create_index("ix_posting_txn", "posting", ["txn_id"])
    # Covering indexes: balances and positions over the whole ledger, and as of / per period.
    op.create_index("ix_posting_balance", "posting", ["account_id", "commodity", "units"])
    op.create_index("ix_posting_period", "posting", ["account_id", "ts", "commodity", "units"])
    op.create_table(
        "price",
        sa.Column("commodity", sa.String(64), primary_key=True),
        sa.Column("date", sa.String(10), primary_key=True),
        sa.Column("currency", sa.String(16), primary_key=True),
        sa.Column("number", sa.BigInteger, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRES_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
