"""Raw rows + rollup in one transaction: every field round-trips, replays never double count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger import write_batch
from storage.queries import fetch_records
from storage.schema import usage_daily, usage_records
from tests.support.ledger_records import make_record


async def test_every_field_round_trips(engine: AsyncEngine) -> None:
    record = make_record(
        1,
        started_at=datetime(2026, 11, 3, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
        finished_at=datetime(2026, 11, 4, 1, 30, 0, 123456, tzinfo=UTC),
        request_id="req_1",
        response_id="chatcmpl-1",
        model_requested="gpt-4o-mini",
        service_tier="flex",
        stream=True,
        project="proj_abc",
        organization="org_x",
        key_fingerprint="sha256:0123456789ab",
        user="alice",
        tags={"env": "prod", "feature": "search"},
        cached_input_tokens=50,
        cache_write_tokens=1,
        reasoning_tokens=7,
        audio_input_tokens=2,
        audio_output_tokens=3,
        image_input_tokens=4,
        image_output_tokens=5,
        accepted_prediction_tokens=6,
        rejected_prediction_tokens=8,
        units={"audio_seconds": Decimal("12.345"), "web_search_calls": Decimal("2")},
        estimate_reason=None,
        cost_usd=Decimal("1234.5678901234"),
        unpriced_reason=None,
        latency_ms=251.5,
        ttft_ms=40.25,
    )
    assert await write_batch(engine, [record]) == 1
    (row,) = await fetch_records(engine, limit=10)
    for name in row:
        expected = getattr(record, name)
        if name == "started_at":
            expected = expected.astimezone(UTC)
        assert row[name] == expected, name
    assert row["started_at"].tzinfo is not None


async def test_replayed_batch_inserts_nothing_and_rollup_is_not_double_counted(
    engine: AsyncEngine,
) -> None:
    first = [make_record(n) for n in range(10)]
    overlapping = [make_record(n) for n in range(5, 15)]
    assert await write_batch(engine, first) == 10
    assert await write_batch(engine, overlapping) == 5
    assert await write_batch(engine, overlapping) == 0
    records = [make_record(n) for n in range(15)]
    async with engine.connect() as conn:
        raw = (await conn.execute(select(func.count(), func.sum(usage_records.c.cost_usd)))).one()
        rolled = (
            await conn.execute(
                select(func.sum(usage_daily.c.requests), func.sum(usage_daily.c.cost_usd))
            )
        ).one()
    expected_cost = sum((r.cost_usd for r in records if r.cost_usd is not None), Decimal(0))
    assert tuple(raw) == (15, expected_cost)
    assert tuple(rolled) == (15, expected_cost)


async def test_rollup_keys_by_utc_day_and_counts_unpriced_and_estimated(
    engine: AsyncEngine,
) -> None:
    late = datetime(2026, 11, 3, 23, 59, 59, tzinfo=UTC)
    records = [
        make_record(1, started_at=late),
        make_record(2, started_at=late + timedelta(seconds=2), cost_usd=None),
        make_record(3, started_at=late, usage_source="estimated", model=None),
    ]
    await write_batch(engine, records)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    usage_daily.c.day,
                    usage_daily.c.model,
                    usage_daily.c.requests,
                    usage_daily.c.unpriced_requests,
                    usage_daily.c.estimated_requests,
                ).order_by(usage_daily.c.day, usage_daily.c.model)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (late.date(), "", 1, 0, 1),
        (late.date(), "gpt-4o-mini-2024-07-18", 1, 0, 0),
        ((late + timedelta(days=1)).date(), "gpt-4o-mini-2024-07-18", 1, 1, 0),
    ]


async def test_naive_datetime_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        await write_batch(engine, [make_record(1, started_at=datetime(2026, 1, 1))])
