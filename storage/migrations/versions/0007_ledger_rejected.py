"""ledger_rejected: the dead-letter store for records the database refused (issue 10).

Revision ID: 0007_ledger_rejected
Revises: 0006_reconciliation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import Money, UtcDateTime

revision = "0007_ledger_rejected"
down_revision: str | None = "0006_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_rejected",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.String(64), nullable=True, unique=True),
        sa.Column("row", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
        sa.Column("retried_at", UtcDateTime(), nullable=True),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("cost_usd", Money(), nullable=True),
    )
    op.create_index("ix_ledger_rejected_started_at", "ledger_rejected", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_rejected_started_at", table_name="ledger_rejected")
    op.drop_table("ledger_rejected")
