"""reconciliation: one row per comparison of the ledger with OpenAI's Usage and Costs APIs.

Revision ID: 0006_reconciliation
Revises: 0005_budget_notifications
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import Money, UtcDateTime

revision = "0006_reconciliation"
down_revision: str | None = "0005_budget_notifications"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("run_at", UtcDateTime(), nullable=False),
        sa.Column("since", sa.Date, nullable=False),
        sa.Column("until", sa.Date, nullable=False),
        sa.Column("billed_usd", Money(), nullable=False),
        sa.Column("ledger_usd", Money(), nullable=False),
        sa.Column("captured_ratio", Money(), nullable=True),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
    )
    op.create_index("ix_reconciliation_run_at", "reconciliation", ["run_at"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_run_at", table_name="reconciliation")
    op.drop_table("reconciliation")
