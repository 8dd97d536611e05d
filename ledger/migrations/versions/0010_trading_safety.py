"""Never trade twice: the environment's trading lease, each run's recorded plan per contract, and
runs executed with no person's review.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

The table definitions below are frozen copies of the engine's tables as they stood at this
revision; a later change to a table gets a migration of its own.
"""

from alembic import op
from sqlalchemy import Column, Integer, MetaData, String, Table, Text

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("trading_lease", "run_plan")

# The tables exactly as they stood at this revision (frozen: never import the live ones).
metadata = MetaData()

trading_lease = Table(
    "trading_lease", metadata,
    Column("env", String(16), primary_key=True),
    Column("owner", String(128), nullable=False),  # host:pid:random, unique per trading process
    Column("pid", Integer, nullable=False),
    Column("host", String(128), nullable=False),
    Column("what", String(200), nullable=False),  # the command that holds it
    Column("acquired_at", String(26), nullable=False),
    Column("expires_at", String(26), nullable=False),
)

run_plan = Table(
    "run_plan", metadata,
    Column("run_id", Integer, primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("outcome", String(16), nullable=False),  # order | cross | unchanged | refused | clipped
    Column("detail", Text, nullable=False),  # what was decided and why, in words
    Column("planned_at", String(26), nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])
    op.add_column("target_run", Column("unattended", Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
