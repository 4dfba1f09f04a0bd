"""Pure aggregation of records into ``usage_daily`` deltas (one per rollup key)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from decimal import Decimal
from typing import Any, Final

from pricing.usage import TOKEN_FIELDS as TOKEN_COLUMNS  # = storage.schema.TOKEN_COLUMNS
from storage.money import quantize_money
from storage.record import UsageRecord

# usage_daily's key and summed columns (storage.schema builds the table from these).
ROLLUP_KEY: Final[tuple[str, ...]] = ("day", "team", "model", "service_tier", "endpoint")
ROLLUP_SUMS: Final[tuple[str, ...]] = (
    "requests",
    *TOKEN_COLUMNS,
    "cost_usd",
    "unpriced_requests",
    "estimated_requests",
)


def rollup_deltas(records: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    """Sums per (day UTC, team, model, service_tier, endpoint), sorted by key.

    Sorted so concurrent writers upsert rollup rows in the same order (no deadlocks on PostgreSQL).
    """
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        day = record.started_at.astimezone(UTC).date()
        key = (day, record.team, record.model or "", record.service_tier or "", record.endpoint)
        delta = sums.get(key)
        if delta is None:
            delta = {
                "day": day,
                "team": key[1],
                "model": key[2],
                "service_tier": key[3],
                "endpoint": key[4],
                "requests": 0,
                **dict.fromkeys(TOKEN_COLUMNS, 0),
                "cost_usd": Decimal(0),
                "unpriced_requests": 0,
                "estimated_requests": 0,
            }
            sums[key] = delta
        delta["requests"] += 1
        for name in TOKEN_COLUMNS:
            delta[name] += getattr(record, name)
        if record.cost_usd is None:
            delta["unpriced_requests"] += 1
        else:
            delta["cost_usd"] += quantize_money(record.cost_usd)  # as stored
        if record.usage_source == "estimated":
            delta["estimated_requests"] += 1
    return [sums[key] for key in sorted(sums)]
