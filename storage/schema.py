"""The ledger's tables (SQLAlchemy Core). Alembic revisions in ``storage/migrations`` create them;
``tests/storage/test_migrations.py`` checks the two agree.

* ``usage_records``: one row per forwarded call; every :class:`storage.record.UsageRecord` field is
  a column of the same name. ``tags`` and ``units`` are JSON (units' Decimal counts as strings).
* ``usage_daily``: the rollup per (day UTC, team, model, service_tier, endpoint), kept in step with
  ``usage_records`` in the same transaction. Missing model / service_tier are stored as ``''`` so the
  key is a real unique key on every backend (NULLs never conflict).
* ``dedupe_objects``: ids of retrieved objects (responses, batches, fine-tuning jobs) already metered.
* ``ledger_rejected``: the dead-letter store -- records the database refused (or that could not be
  made storable), as JSON with the reason; listed and re-inserted by ``openai-meter db rejected``.

The widths here are the one source of truth for bounding a record (:mod:`storage.bounds` reads
them from these ``Column`` objects; nothing else copies them).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from pricing.usage import TOKEN_FIELDS
from storage.rollup import ROLLUP_KEY as ROLLUP_KEY  # the rollup's columns live with its math
from storage.rollup import ROLLUP_SUMS as ROLLUP_SUMS
from storage.types import Money, UtcDateTime

# The ledger's token columns are exactly the normalized usage's token fields.
TOKEN_COLUMNS: Final[tuple[str, ...]] = TOKEN_FIELDS


# JSON columns (``tags``, ``units``) have no width of their own: these bound each entry.
JSON_KEY_WIDTH: Final = 64
JSON_VALUE_WIDTH: Final = 255
JSON_MAX_ENTRIES: Final = 64
REJECTED_ERROR_WIDTH: Final = 2000

metadata = MetaData()

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=False),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("request_id", String(255), nullable=True),
    Column("response_id", String(255), nullable=True),
    Column("model_requested", String(255), nullable=True),
    Column("model", String(255), nullable=True),
    Column("service_tier", String(32), nullable=True),
    Column("stream", Boolean, nullable=False),
    Column("team", String(128), nullable=False),
    Column("project", String(255), nullable=True),
    Column("organization", String(255), nullable=True),
    Column("key_fingerprint", String(64), nullable=True),
    Column("user", String(255), nullable=True),
    Column("tags", JSON, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in TOKEN_COLUMNS),
    Column("units", JSON, nullable=False),
    Column("usage_source", String(16), nullable=False),
    Column("estimate_reason", String(255), nullable=True),
    Column("cost_usd", Money(), nullable=True),
    Column("price_ref", String(255), nullable=True),
    Column("unpriced_reason", String(255), nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Index("ix_usage_records_started_at", "started_at"),
    Index("ix_usage_records_team_started_at", "team", "started_at"),
    Index("ix_usage_records_model_started_at", "model", "started_at"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Date, nullable=False),
    Column("team", String(128), nullable=False),
    Column("model", String(255), nullable=False),
    Column("service_tier", String(32), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("requests", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in TOKEN_COLUMNS),
    Column("cost_usd", Money(), nullable=False),
    Column("unpriced_requests", BigInteger, nullable=False),
    Column("estimated_requests", BigInteger, nullable=False),
    PrimaryKeyConstraint(*ROLLUP_KEY, name="pk_usage_daily"),
    Index("ix_usage_daily_team_day", "team", "day"),
)

dedupe_objects = Table(
    "dedupe_objects",
    metadata,
    Column("kind", String(32), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("kind", "object_id", name="pk_dedupe_objects"),
)

# Virtual keys (issue 6, created by revision 0004_virtual_keys): ``sk-meter-...`` keys the proxy
# issued to a team, stored only as SHA-256 (full hex) plus the public fingerprint.
virtual_keys = Table(
    "virtual_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("team", String(128), nullable=False),
    Column("description", String(255), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
)

# Budget alerts (issue 15, created by revision 0005_budget_notifications): one row per (team, period,
# period start, event) that some replica claimed -- the primary key makes "insert if absent" decide
# which replica sends. ``state``: ``claimed`` (sending), ``delivered``, ``failed`` (gave up), or
# ``implied`` (a warn made moot because the period went straight to exceeded; never sent), or
# ``recorded`` (no webhook wanted this event; kept because a later reset depends on it).
budget_notifications = Table(
    "budget_notifications",
    metadata,
    Column("team", String(128), nullable=False),
    Column("period", String(16), nullable=False),
    Column("period_start", UtcDateTime(), nullable=False),
    Column("event", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("claimed_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    # The numbers at the crossing, as exact decimal text (any size), so that another replica can
    # re-send an alert whose claimer died before delivering it.
    Column("spent_usd", String(64), nullable=True),
    Column("limit_usd", String(64), nullable=True),
    Column("warn_at_percent", String(64), nullable=True),
    PrimaryKeyConstraint("team", "period", "period_start", "event", name="pk_budget_notifications"),
)

# Reconciliation runs (issue 13, revision 0006_reconciliation): one row per comparison of the ledger
# with OpenAI's Admin API; ``result`` is the whole report as JSON (money as decimal strings).
reconciliation = Table(
    "reconciliation",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("run_at", UtcDateTime(), nullable=False),
    Column("since", Date, nullable=False),
    Column("until", Date, nullable=False),
    Column("billed_usd", Money(), nullable=False),
    Column("ledger_usd", Money(), nullable=False),
    # A ratio, not money: the Money type only for its exact decimal storage on both backends.
    Column("captured_ratio", Money(), nullable=True),
    Column("ok", Boolean, nullable=False),
    Column("result", JSON, nullable=False),
    Index("ix_reconciliation_run_at", "run_at"),
)

# The dead-letter store (revision 0007_ledger_rejected). ``row`` is the record as ASCII JSON (the
# spool's line format; values that could not be stored kept as their text); ``record_id`` is unique
# so replaying the same refusal (spool, journal) adds nothing. ``started_at``/``team``/``cost_usd``
# are copied out for reports ("rejected spend").
ledger_rejected = Table(
    "ledger_rejected",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record_id", String(64), nullable=True, unique=True),
    Column("row", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    Column("retried_at", UtcDateTime(), nullable=True),
    Column("retries", Integer, nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("team", String(128), nullable=True),
    Column("cost_usd", Money(), nullable=True),
    Index("ix_ledger_rejected_started_at", "started_at"),
)

# Shared budget reservations (issue 15, created by revision 0008_budget_reservations). One row per
# (team, period, period start) with the period's settled spend and the in-flight reservations of
# every replica, updated in one statement when a call is admitted and when it settles; one row per
# in-flight call so a replica that died mid-call cannot hold its reservations for ever (swept once
# ``expires_at`` passed). Used on PostgreSQL only (see storage.budget_counters).
budget_counters = Table(
    "budget_counters",
    metadata,
    Column("team", String(128), nullable=False),
    Column("period", String(16), nullable=False),
    Column("period_start", UtcDateTime(), nullable=False),
    Column("spent_usd", Money(), nullable=False),
    Column("reserved_usd", Money(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("team", "period", "period_start", name="pk_budget_counters"),
)

budget_inflight = Table(
    "budget_inflight",
    metadata,
    Column("call_id", String(64), nullable=False),
    Column("team", String(128), nullable=False),
    Column("period", String(16), nullable=False),
    Column("period_start", UtcDateTime(), nullable=False),
    Column("amount_usd", Money(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("call_id", "period", name="pk_budget_inflight"),
    Index("ix_budget_inflight_expires_at", "expires_at"),
)
