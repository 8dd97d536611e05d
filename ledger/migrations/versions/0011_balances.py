"""Maintained balances: per account and commodity, and per lot, kept by the database itself.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

Positions, balances and lots were sums over every posting of an account: their cost grew with
the ledger's history (a fill's holdings read 52,000 postings after a year). Two tables now hold
those sums, and a trigger on `posting` keeps them in the statement that inserts the posting, so
that they change in the same transaction as the postings, whoever inserts them (the ledger's own
booking, a bulk import, or plain SQL):

- `balance`: one row per (account, commodity) ever posted to;
- `lot_balance`: one row per lot held at a cost (account, commodity, cost, cost currency, cost
  date, label; an absent date or label is stored as ''), with the time of its first posting
  (lots are reduced oldest first).

SQLite only. SQLite has one writer at a time (writers begin IMMEDIATE), so a trigger updating
a balance row adds no waiting. On PostgreSQL the same trigger would hold that row's lock from the
posting's insert to the commit, so two sessions posting to one account (the cash account: nearly
always) would wait on each other, where they do not today (and could deadlock); there the tables
are created but stay empty, and the queries keep summing postings. A commit-time design for
PostgreSQL is left for later.

Why triggers rather than the booking code: the ledger's rules already live in the database
(balance, append-only, sealing), postings inserted by plain SQL must count too (tests and
repairs do that), and the booking ceiling (raw sqlite3 into the same schema) then pays the same
cost as the ledger, so its ratio stays honest.

No overflow: a sum is kept in two parts, `whole` = SUM(units / 10^9) and `nanos` =
SUM(units % 10^9) (both truncate toward zero, like ledger/sums.py), each of which fits 64 bits
for any ledger of fewer than 9.2e9 postings; the balance is whole * 10^9 + nanos, combined in
Python. `ledger/maintained.py` recomputes both tables from the postings and names any difference.

Existing postings are summed into the tables here, once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

F = 1_000_000_000  # nano-units per unit; see ledger/numbers.py

_BALANCE_UPSERT = f"""INSERT INTO balance (account_id, commodity, whole, nanos)
    VALUES (NEW.account_id, NEW.commodity, NEW.units / {F}, NEW.units % {F})
    ON CONFLICT (account_id, commodity) DO UPDATE
    SET whole = balance.whole + excluded.whole, nanos = balance.nanos + excluded.nanos"""

_LOT_UPSERT = f"""INSERT INTO lot_balance (account_id, commodity, cost, cost_currency, cost_date, cost_label,
                                     whole, nanos, first_ts)
    VALUES (NEW.account_id, NEW.commodity, NEW.cost, NEW.cost_currency, COALESCE(NEW.cost_date, ''),
            COALESCE(NEW.cost_label, ''), NEW.units / {F}, NEW.units % {F}, NEW.ts)
    ON CONFLICT (account_id, commodity, cost, cost_currency, cost_date, cost_label) DO UPDATE
    SET whole = lot_balance.whole + excluded.whole, nanos = lot_balance.nanos + excluded.nanos,
        first_ts = CASE WHEN excluded.first_ts < lot_balance.first_ts THEN excluded.first_ts
                        ELSE lot_balance.first_ts END"""

SQLITE = [
    f"CREATE TRIGGER posting_balance AFTER INSERT ON posting BEGIN {_BALANCE_UPSERT}; END",
    f"CREATE TRIGGER posting_lot_balance AFTER INSERT ON posting WHEN NEW.cost IS NOT NULL BEGIN {_LOT_UPSERT}; END",
]

BACKFILL = [
    f"""INSERT INTO balance (account_id, commodity, whole, nanos)
        SELECT account_id, commodity, SUM(units / {F}), SUM(units % {F}) FROM posting
        GROUP BY account_id, commodity""",
    f"""INSERT INTO lot_balance (account_id, commodity, cost, cost_currency, cost_date, cost_label, whole, nanos,
                                 first_ts)
        SELECT account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''), COALESCE(cost_label, ''),
               SUM(units / {F}), SUM(units % {F}), MIN(ts) FROM posting WHERE cost IS NOT NULL
        GROUP BY account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''), COALESCE(cost_label, '')""",
]


def upgrade() -> None:
    op.create_table(
        "balance",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("account.id"), primary_key=True),
        sa.Column("commodity", sa.String(64), primary_key=True),
        sa.Column("whole", sa.BigInteger, nullable=False),
        sa.Column("nanos", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "lot_balance",
        sa.Column("account_id", sa.Integer, sa.ForeignKey("account.id"), primary_key=True),
        sa.Column("commodity", sa.String(64), primary_key=True),
        sa.Column("cost", sa.BigInteger, primary_key=True),
        sa.Column("cost_currency", sa.String(64), primary_key=True),
        sa.Column("cost_date", sa.String(10), primary_key=True),
        sa.Column("cost_label", sa.String(128), primary_key=True),
        sa.Column("whole", sa.BigInteger, nullable=False),
        sa.Column("nanos", sa.BigInteger, nullable=False),
        sa.Column("first_ts", sa.String(26), nullable=False),
    )
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL: the tables stay empty and the queries sum postings (see above)
    for statement in BACKFILL + SQLITE:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
