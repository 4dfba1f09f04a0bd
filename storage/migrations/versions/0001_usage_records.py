"""usage_records: one row per forwarded call.

Revision ID: 0001_usage_records
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import Money, UtcDateTime

revision = "0001_usage_records"
down_revision: str | None = None
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
        "usage_records",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("response_id", sa.String(255), nullable=True),
        sa.Column("model_requested", sa.String(255), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("service_tier", sa.String(32), nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("organization", sa.String(255), nullable=True),
        sa.Column("key_fingerprint", sa.String(64), nullable=True),
        sa.Column("user", sa.String(255), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in _TOKENS),
        sa.Column("units", sa.JSON, nullable=False),
        sa.Column("usage_source", sa.String(16), nullable=False),
        sa.Column("estimate_reason", sa.String(255), nullable=True),
        sa.Column("cost_usd", Money(), nullable=True),
        sa.Column("price_ref", sa.String(255), nullable=True),
        sa.Column("unpriced_reason", sa.String(255), nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("ttft_ms", sa.Float, nullable=True),
    )
    op.create_index("ix_usage_records_started_at", "usage_records", ["started_at"])
    op.create_index("ix_usage_records_team_started_at", "usage_records", ["team", "started_at"])
    op.create_index("ix_usage_records_model_started_at", "usage_records", ["model", "started_at"])


def downgrade() -> None:
    op.drop_table("usage_records")
