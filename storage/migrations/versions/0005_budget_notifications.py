"""budget_notifications: which budget alert (team, period, period start, event) a replica claimed.

Revision ID: 0005_budget_notifications
Revises: 0004_virtual_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcDateTime

revision = "0005_budget_notifications"
down_revision: str | None = "0004_virtual_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_notifications",
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        # The numbers at the crossing, as exact decimal text (any size), so that another replica
        # can re-send an alert whose claimer died before delivering it.
        sa.Column("spent_usd", sa.String(64), nullable=True),
        sa.Column("limit_usd", sa.String(64), nullable=True),
        sa.Column("warn_at_percent", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint(
            "team", "period", "period_start", "event", name="pk_budget_notifications"
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_notifications")
