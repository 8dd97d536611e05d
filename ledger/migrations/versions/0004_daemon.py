"""The daemon's lease and heartbeat, and the maintenance tools' adjustment records.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

The table definitions below are frozen copies of the engine's tables as they stood at this
revision; a later change to a table gets a migration of its own. APScheduler creates its own job table (`tl_apscheduler_jobs`).
"""

from alembic import op
from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("daemon_lease", "daemon_heartbeat", "adjustment")


# The tables exactly as they stood at this revision (frozen: never import the live ones).
metadata = MetaData()

daemon_lease = Table(
    "daemon_lease", metadata,
    Column("env", String(16), primary_key=True),
    Column("owner", String(128), nullable=False),  # host:pid:random, unique per daemon process
    Column("pid", Integer, nullable=False),
    Column("host", String(128), nullable=False),
    Column("acquired_at", String(26), nullable=False),
    Column("expires_at", String(26), nullable=False),
)

daemon_heartbeat = Table(
    "daemon_heartbeat", metadata,
    Column("env", String(16), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("started_at", String(26), nullable=False),
    Column("at", String(26), nullable=False),
    Column("last_job", String(64)),
    Column("last_result", Text),  # "ok: ...", "failed: ...", "skipped: ..."
    Column("state", String(16), nullable=False, server_default="running"),  # running | stopped
)

adjustment = Table(
    "adjustment", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # attribute adopt transfer manual-close reverse cash
    Column("subject", String(128), nullable=False),  # exec key, contract, entry id or currency
    Column("contract", String(64)),
    Column("from_holder", String(64)),  # "" for unattributed
    Column("to_holder", String(64)),
    Column("quantity", BigInteger),  # signed, nano-units
    Column("price", BigInteger),
    Column("reason", Text, nullable=False),
    Column("who", String(64), nullable=False),
    Column("created_at", String(26), nullable=False),
    Column("txn_id", BigInteger, nullable=False),
    Column("marks_before", Text),  # JSON {holder: price} of the contract's futures marks
    Column("resolved", Text),  # JSON list of exception dedupe keys this entry resolved
)

Index("ix_adjustment_subject", adjustment.c.kind, adjustment.c.subject)


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[name] for name in TABLES])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
