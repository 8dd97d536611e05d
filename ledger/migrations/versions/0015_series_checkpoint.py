"""The trader's curves resume from a checkpoint: `series_checkpoint`, and `price_change`, the log
that tells a checkpoint whether a price it was computed from changed since.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

`series_checkpoint` holds, per grouping of the daily series (total, strategy, instrument), the
replay's state at the end of a past day and the series up to it (reports/series_checkpoint.py
says what exactly, and when it may be used). One row per grouping: a newer checkpoint replaces
the older in one statement (an upsert), so a reader sees the old row or the new, never half.

`price_change` is appended to by triggers on `price_bar`, `settlement` and `fx_rate`: one row
per date an insert, a delete or an update that changed something touched (an update moving a row
logs both dates). It is insert-only; a checkpoint keeps how many rows it had on or before its
day, and is valid while that count is the same (an index range count on `day`). A count, not
the highest row id: on PostgreSQL ids come from a sequence, and a transaction holding a smaller
id may commit after a larger one was read. The log holds no price, only that a date moved.

The price tables get an index on `date` each: a resumed series reads only the rows after its
checkpoint's day.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

PRICE_TABLES = (("price_bar", "instrument", "close"), ("settlement", "contract", "price"),
                ("fx_rate", "currency", "rate"))


def _sqlite_triggers(table: str, key: str, value: str) -> list[str]:
    changed = f"OLD.{value} IS NOT NEW.{value} OR OLD.date IS NOT NEW.date OR OLD.{key} IS NOT NEW.{key}"
    return [
        f"CREATE TRIGGER {table}_change_insert AFTER INSERT ON {table} "
        "BEGIN INSERT INTO price_change (day) VALUES (NEW.date); END",
        f"CREATE TRIGGER {table}_change_update AFTER UPDATE ON {table} WHEN {changed} "
        "BEGIN INSERT INTO price_change (day) VALUES (OLD.date); INSERT INTO price_change (day) VALUES (NEW.date); END",
        f"CREATE TRIGGER {table}_change_delete AFTER DELETE ON {table} "
        "BEGIN INSERT INTO price_change (day) VALUES (OLD.date); END",
    ]


POSTGRES_FUNCTION = """CREATE FUNCTION tl_price_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD IS NOT DISTINCT FROM NEW THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO price_change (day) VALUES (OLD.date);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO price_change (day) VALUES (NEW.date);
    END IF;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "series_checkpoint",
        sa.Column("series_by", sa.String(16), primary_key=True),  # total | strategy | instrument
        sa.Column("day", sa.String(10), nullable=False),  # the state is at this day's end
        sa.Column("format", sa.Integer, nullable=False),  # the code's series format version
        sa.Column("entries", sa.BigInteger, nullable=False),  # entries with a time on or before `day`
        sa.Column("price_changes", sa.BigInteger, nullable=False),  # price_change rows on or before `day`
        sa.Column("payload", sa.Text, nullable=False),  # JSON: the state and the series to `day`
        sa.Column("written_at", sa.String(26), nullable=False),
    )
    op.create_table(
        "price_change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
    )
    op.create_index("ix_price_change_day", "price_change", ["day"])
    for table, _, _ in PRICE_TABLES:
        op.create_index(f"ix_{table}_date", table, ["date"])
    if op.get_bind().dialect.name == "sqlite":
        for table, key, value in PRICE_TABLES:
            for statement in _sqlite_triggers(table, key, value):
                op.execute(statement)
    else:
        op.execute(POSTGRES_FUNCTION)
        for table, _, _ in PRICE_TABLES:
            op.execute(f"CREATE TRIGGER {table}_change AFTER INSERT OR UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION tl_price_change()")


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
