"""Maintained balances on PostgreSQL: per-transaction delta rows, folded in at commit's pace.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

Migration 0011 made SQLite keep `balance` and `lot_balance` by a trigger in the statement that
inserts a posting. On PostgreSQL the same trigger would lock the cash account's balance row from
the first posting to the commit: every booker of the account would wait for the one before it,
and two bookers touching two accounts in opposite orders would deadlock. Here each transaction
writes only rows of its own:

- a statement-level trigger on `posting` adds the inserted postings, summed per account and
  commodity (per lot for postings at a cost), into `balance_delta` / `lot_delta` under the
  writing transaction's id. No other transaction ever writes those rows, so a booker never waits
  for another and cannot deadlock with one; a rollback takes its deltas with it;
- `tl_fold_balances()` moves the deltas of committed transactions into `balance` / `lot_balance`
  (one DELETE ... RETURNING feeding one aggregate upsert per table). The ledger calls it from the
  booking that takes every 16th entry id (`store.FOLD_EVERY`), and at the end of a bulk import;
  only one transaction folds at a time (a transaction-scoped advisory lock,
  *tried*: a booker that finds another folding skips, and the next one folds). Since only folders
  write `balance`, no booker waits on its rows either;
- a reader sums `balance` and the deltas it can see in one statement (one snapshot): committed
  deltas not folded yet, and its own transaction's. The deltas are few (what committed since the
  last fold: about 16 entries' worth), so a balance costs the number of accounts, not of postings.

The deferred balance check of 0005 (a posting added to another transaction's entry) is untouched:
it reads postings, not these tables. Existing postings are summed into `balance` and `lot_balance`
here, once. SQLite gets the two delta tables too (empty: its trigger keeps the sums directly), so
the schema is the same on both backends.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

F = 1_000_000_000  # nano-units per unit; see ledger/numbers.py
_LOT = "account_id, commodity, cost, cost_currency, cost_date, cost_label"

POSTGRES = [
    f"""CREATE FUNCTION tl_posting_deltas() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO balance_delta (xid, account_id, commodity, whole, nanos)
            SELECT txid_current(), account_id, commodity, SUM(units / {F}), SUM(units % {F})
            FROM new_postings GROUP BY account_id, commodity
            ON CONFLICT (xid, account_id, commodity) DO UPDATE
            SET whole = balance_delta.whole + excluded.whole, nanos = balance_delta.nanos + excluded.nanos;
          INSERT INTO lot_delta (xid, {_LOT}, whole, nanos, first_ts)
            SELECT txid_current(), account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''),
                   COALESCE(cost_label, ''), SUM(units / {F}), SUM(units % {F}), MIN(ts)
            FROM new_postings WHERE cost IS NOT NULL
            GROUP BY account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''), COALESCE(cost_label, '')
            ON CONFLICT (xid, {_LOT}) DO UPDATE
            SET whole = lot_delta.whole + excluded.whole, nanos = lot_delta.nanos + excluded.nanos,
                first_ts = LEAST(lot_delta.first_ts, excluded.first_ts);
          RETURN NULL;
        END $$""",
    """CREATE TRIGGER posting_deltas AFTER INSERT ON posting REFERENCING NEW TABLE AS new_postings
        FOR EACH STATEMENT EXECUTE FUNCTION tl_posting_deltas()""",
    f"""CREATE FUNCTION tl_fold_balances() RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          IF NOT pg_try_advisory_xact_lock(hashtextextended('tl:fold-balances', 0)) THEN
            RETURN;  -- another transaction is folding: the next booking folds what is left
          END IF;
          WITH moved AS (DELETE FROM balance_delta WHERE xid <> txid_current()
                         RETURNING account_id, commodity, whole, nanos)
          INSERT INTO balance (account_id, commodity, whole, nanos)
            SELECT account_id, commodity, SUM(whole), SUM(nanos) FROM moved GROUP BY account_id, commodity
            ON CONFLICT (account_id, commodity) DO UPDATE
            SET whole = balance.whole + excluded.whole, nanos = balance.nanos + excluded.nanos;
          WITH moved AS (DELETE FROM lot_delta WHERE xid <> txid_current()
                         RETURNING {_LOT}, whole, nanos, first_ts)
          INSERT INTO lot_balance ({_LOT}, whole, nanos, first_ts)
            SELECT {_LOT}, SUM(whole), SUM(nanos), MIN(first_ts) FROM moved GROUP BY {_LOT}
            ON CONFLICT ({_LOT}) DO UPDATE
            SET whole = lot_balance.whole + excluded.whole, nanos = lot_balance.nanos + excluded.nanos,
                first_ts = LEAST(lot_balance.first_ts, excluded.first_ts);
        END $$""",
]

BACKFILL = [
    f"""INSERT INTO balance (account_id, commodity, whole, nanos)
        SELECT account_id, commodity, SUM(units / {F}), SUM(units % {F}) FROM posting
        GROUP BY account_id, commodity""",
    f"""INSERT INTO lot_balance ({_LOT}, whole, nanos, first_ts)
        SELECT account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''), COALESCE(cost_label, ''),
               SUM(units / {F}), SUM(units % {F}), MIN(ts) FROM posting WHERE cost IS NOT NULL
        GROUP BY account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''), COALESCE(cost_label, '')""",
]


def upgrade() -> None:
    op.create_table(
        "balance_delta",
        sa.Column("xid", sa.BigInteger, primary_key=True),
        sa.Column("account_id", sa.Integer, primary_key=True),
        sa.Column("commodity", sa.String(64), primary_key=True),
        sa.Column("whole", sa.BigInteger, nullable=False),
        sa.Column("nanos", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "lot_delta",
        sa.Column("xid", sa.BigInteger, primary_key=True),
        sa.Column("account_id", sa.Integer, primary_key=True),
        sa.Column("commodity", sa.String(64), primary_key=True),
        sa.Column("cost", sa.BigInteger, primary_key=True),
        sa.Column("cost_currency", sa.String(64), primary_key=True),
        sa.Column("cost_date", sa.String(10), primary_key=True),
        sa.Column("cost_label", sa.String(128), primary_key=True),
        sa.Column("whole", sa.BigInteger, nullable=False),
        sa.Column("nanos", sa.BigInteger, nullable=False),
        sa.Column("first_ts", sa.String(26), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite keeps the sums directly (0011); these tables stay empty there
    for statement in BACKFILL + POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
