"""The daemon's lease and heartbeat, and the maintenance tools' adjustment records.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Created from `engine/tables_daemon.py` as it stood at this revision; a later change to those
tables gets a migration of its own. APScheduler creates its own job table (`tl_apscheduler_jobs`).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("daemon_lease", "daemon_heartbeat", "adjustment")


def upgrade() -> None:
    from tradeledger.engine import tables_daemon

    bind = op.get_bind()
    tables_daemon.metadata.create_all(bind, tables=[tables_daemon.metadata.tables[name] for name in TABLES])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
