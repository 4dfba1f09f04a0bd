"""A migrated SQLite ledger and a fixed set of records for report / admin API / budget tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.record import UsageRecord


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


_counter = iter(range(1_000_000_000))


def make_record(
    started: str | datetime,
    *,
    team: str = "unassigned",
    model: str | None = "gpt-4o-mini",
    cost: str | None = "0",
    **fields: Any,
) -> UsageRecord:
    start = at(started) if isinstance(started, str) else started
    values: dict[str, Any] = {
        "id": fields.pop("id", f"rec-{next(_counter):09d}"),
        "started_at": start,
        "finished_at": start + timedelta(milliseconds=250),
        "method": "POST",
        "path": "/v1/chat/completions",
        "endpoint": "chat.completions",
        "status_code": 200,
        "outcome": "ok",
        "team": team,
        "model": model,
        "model_requested": model,
        "cost_usd": Decimal(cost) if cost is not None else None,
        "usage_source": "reported",
    }
    values.update(fields)
    return UsageRecord(**values)


# Window [2026-11-01, 2026-12-01): records on both edges check since-inclusive / until-exclusive.
NOVEMBER = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")


def november_records() -> list[UsageRecord]:
    return [
        make_record(
            "2026-11-01T00:00:00Z",
            team="search",
            cost="0.00027",
            input_tokens=1000,
            output_tokens=200,
            tags={"env": "prod"},
            user="alice",
            project="proj_search",
        ),
        make_record(
            "2026-11-02T10:00:00Z",
            team="search",
            cost="0.0000001234",
            input_tokens=3,
            output_tokens=1,
            usage_source="estimated",
            tags={"env": "dev"},
            user="bob",
        ),
        make_record(
            "2026-11-15T08:30:00Z",
            team="ads",
            model="gpt-4o-2024-08-06",
            cost="1.2345678901",
            input_tokens=250_000,
            cached_input_tokens=500,
            output_tokens=40_000,
            reasoning_tokens=10,
            service_tier="default",
        ),
        make_record(
            "2026-11-20T23:59:59.999999Z",
            team="ads",
            model="brand-new-model",
            cost=None,
            input_tokens=10,
            output_tokens=5,
            tags={"env": "prod"},
        ),
        make_record(
            "2026-11-30T12:00:00Z",
            model=None,
            cost="0",
            status_code=401,
            outcome="upstream_error",
            usage_source="none",
        ),
        # Outside the window on each side.
        make_record("2026-12-01T00:00:00Z", team="search", cost="100"),
        make_record("2026-10-31T23:59:59.999999Z", team="search", cost="100"),
    ]


async def migrated_engine(path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite:///{path}")
    await upgrade(engine)
    return engine


async def ledger_with(path: Path, records: Iterable[UsageRecord]) -> AsyncIterator[AsyncEngine]:
    engine = await migrated_engine(path)
    try:
        await write_batch(engine, list(records))
        yield engine
    finally:
        await engine.dispose()
