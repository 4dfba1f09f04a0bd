"""dedupe_objects: retrieved objects (responses, batches, fine-tuning jobs) already metered.

Revision ID: 0003_dedupe_objects
Revises: 0002_usage_daily
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcDateTime

revision = "0003_dedupe_objects"
down_revision: str | None = "0002_usage_daily"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dedupe_objects",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "object_id", name="pk_dedupe_objects"),
    )


def downgrade() -> None:
    op.drop_table("dedupe_objects")
