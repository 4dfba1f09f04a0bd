"""budget_counters + budget_inflight: budget reservations shared by every replica (issue 15).

Revision ID: 0008_budget_reservations
Revises: 0007_ledger_rejected
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import Money, UtcDateTime

revision = "0008_budget_reservations"
down_revision: str | None = "0007_ledger_rejected"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_counters",
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.Column("reserved_usd", Money(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("team", "period", "period_start", name="pk_budget_counters"),
    )
    op.create_table(
        "budget_inflight",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "period", name="pk_budget_inflight"),
    )
    op.create_index("ix_budget_inflight_expires_at", "budget_inflight", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_inflight_expires_at", table_name="budget_inflight")
    op.drop_table("budget_inflight")
    op.drop_table("budget_counters")
