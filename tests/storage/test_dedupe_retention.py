"""Dedupe of retrieved objects and raw-row retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.dedupe import SqlDedupeStore
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.queries import spend
from storage.retention import cutoff, prune
from storage.schema import usage_records
from tests.support.ledger_records import BASE_TIME, make_record


async def test_first_time_is_true_once_per_kind_and_id(engine: AsyncEngine) -> None:
    store = SqlDedupeStore(engine)
    assert await store.first_time("response", "resp_1") is True
    assert await store.first_time("response", "resp_1") is False
    assert await store.first_time("batch", "resp_1") is True


async def test_first_time_is_atomic_across_engines(engine: AsyncEngine, database_url: str) -> None:
    other = create_engine(database_url)
    try:
        stores = [SqlDedupeStore(engine), SqlDedupeStore(other)]
        results = await asyncio.gather(
            *(stores[i % 2].first_time("batch", f"batch_{i // 8}") for i in range(64))
        )
    finally:
        await other.dispose()
    assert sum(results) == 8  # one winner per id


async def test_prune_removes_old_raw_rows_and_keeps_rollups(engine: AsyncEngine) -> None:
    old = [make_record(n, started_at=BASE_TIME - timedelta(days=40, seconds=n)) for n in range(30)]
    new = [make_record(100 + n) for n in range(5)]
    await write_batch(engine, old + new)
    window = {"since": BASE_TIME - timedelta(days=60), "until": BASE_TIME + timedelta(days=1)}
    before = await spend(engine, **window)
    assert await prune(engine, before=cutoff(BASE_TIME, 30), chunk=7) == 30
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(usage_records))).scalar() == 5
    after = await spend(engine, **window)  # whole days come from the rollup: totals unchanged
    assert after == before and after[0]["requests"] == 35


def test_cutoff_is_a_utc_midnight() -> None:
    now = datetime(2026, 11, 3, 15, 30, tzinfo=UTC)
    assert cutoff(now, 30) == datetime(2026, 10, 4, tzinfo=UTC)
