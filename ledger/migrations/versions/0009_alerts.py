"""The alerts' outbox: one row per (alert, channel), sent once, retried with backoff.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

The table is defined here as it stands at this revision (engine/tables.py mirrors it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alert_key", sa.String(250), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.String(26), nullable=False),
        sa.Column("next_at", sa.String(26), nullable=False),
        sa.Column("sent_at", sa.String(26)),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("alert_key", "channel", name="ux_alert_outbox_key_channel"),
    )
    op.create_index("ix_alert_outbox_due", "alert_outbox", ["state", "next_at"])


def downgrade() -> None:
    raise RuntimeError("the ledger is never downgraded: restore a backup instead")
