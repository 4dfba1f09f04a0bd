"""usage_daily: the per-day rollup reports read, backfilled from existing raw rows.

Revision ID: 0002_usage_daily
Revises: 0001_usage_records
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import Money

revision = "0002_usage_daily"
down_revision: str | None = "0001_usage_records"
branch_labels = None
depends_on = None

_TOKENS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "image_input_tokens",
    "image_output_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
)


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("service_tier", sa.String(32), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in _TOKENS),
        sa.Column("cost_usd", Money(), nullable=False),
        sa.Column("unpriced_requests", sa.BigInteger, nullable=False),
        sa.Column("estimated_requests", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "team", "model", "service_tier", "endpoint", name="pk_usage_daily"
        ),
    )
    op.create_index("ix_usage_daily_team_day", "usage_daily", ["team", "day"])
    # Backfill: raw rows written before this revision get their rollup now.
    bind = op.get_bind()
    day = (
        "date(started_at)"
        if bind.dialect.name == "sqlite"
        else "CAST(started_at AT TIME ZONE 'UTC' AS date)"
    )
    sums = ", ".join(f"SUM({name})" for name in _TOKENS)
    op.execute(
        f"""
        INSERT INTO usage_daily (day, team, model, service_tier, endpoint, requests,
            {", ".join(_TOKENS)}, cost_usd, unpriced_requests, estimated_requests)
        SELECT {day}, team, COALESCE(model, ''), COALESCE(service_tier, ''), endpoint, COUNT(*),
            {sums}, COALESCE(SUM(cost_usd), 0),
            SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END),
            SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END)
        FROM usage_records
        GROUP BY {day}, team, COALESCE(model, ''), COALESCE(service_tier, ''), endpoint
        """
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
