"""The fast batch write keeps the ledger exact on both backends.

PostgreSQL writes raw rows and the rollup in one SQL statement (``storage.pg_write``), SQLite in
Python (``storage.rollup.rollup_deltas``); either way ``usage_daily`` must equal the Python rollup of
the distinct records, money must be rounded half-even like ``NUMERIC(20,10)`` input from Python, and
replays must not count twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.queries import fetch_records
from storage.rollup import rollup_deltas
from storage.schema import ROLLUP_KEY, ROLLUP_SUMS, usage_daily, usage_records
from storage.types import quantize_money
from tests.support.ledger_records import BASE_TIME, make_record


async def _rollup_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(usage_daily))).mappings().all()
    return sorted((dict(row) for row in rows), key=lambda row: tuple(row[k] for k in ROLLUP_KEY))


def _expected(deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(deltas, key=lambda row: tuple(row[k] for k in ROLLUP_KEY))


_costs = st.one_of(
    st.none(),
    st.decimals(min_value=0, max_value=1000, places=10, allow_nan=False),
    # more places than NUMERIC(20,10) keeps: rounding happens in Python, half-even
    st.integers(0, 10**14).map(lambda n: Decimal(n).scaleb(-13)),
    st.sampled_from([Decimal("0.00000000005"), Decimal("0.00000000015"), Decimal("1E-11")]),
)
_records = st.lists(
    st.builds(
        lambda n, seconds, offset_h, team, model, tier, source, cost, tokens: make_record(
            n,
            started_at=(BASE_TIME + timedelta(seconds=seconds)).astimezone(
                timezone(timedelta(hours=offset_h))
            ),
            team=team,
            model=model,
            service_tier=tier,
            usage_source=source,
            cost_usd=cost,
            input_tokens=tokens,
        ),
        n=st.integers(0, 40),
        seconds=st.integers(-3 * 86_400, 3 * 86_400),
        offset_h=st.integers(-11, 12),
        team=st.sampled_from(["search", "Search", "ads", "zé", "b"]),
        model=st.sampled_from([None, "gpt-4o", "gpt-4o-mini", "o3"]),
        tier=st.sampled_from([None, "flex", "default"]),
        source=st.sampled_from(["reported", "estimated", "none"]),
        cost=_costs,
        tokens=st.integers(0, 2**40),
    ),
    max_size=30,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(_records, min_size=1, max_size=3))
async def test_rollup_equals_python_rollup_of_the_rows_actually_inserted(
    engine: AsyncEngine, batches: list[list[Any]]
) -> None:
    async with engine.begin() as conn:  # fresh ledger per example
        await conn.execute(delete(usage_daily))
        await conn.execute(delete(usage_records))
    kept: dict[str, Any] = {}  # id -> the record the ledger keeps (first batch that had it)
    for batch in batches:
        fresh = {r.id: r for r in batch if r.id not in kept}  # within a batch the last one wins
        assert await write_batch(engine, batch) == len(fresh)
        kept.update(fresh)
        assert await write_batch(engine, batch) == 0  # replay: nothing new, nothing counted
    assert await _rollup_rows(engine) == _expected(rollup_deltas(kept.values()))
    stored = {row["id"]: row["cost_usd"] for row in await fetch_records(engine, limit=1000)}
    assert stored == {
        i: None if r.cost_usd is None else quantize_money(r.cost_usd) for i, r in kept.items()
    }


async def test_money_beyond_ten_places_rounds_half_even_in_raw_rows_and_rollup(
    engine: AsyncEngine,
) -> None:
    costs = [Decimal("0.00000000005"), Decimal("0.00000000015"), Decimal("0.00000000025")]
    await write_batch(engine, [make_record(n, cost_usd=c) for n, c in enumerate(costs)])
    stored = [row["cost_usd"] for row in await fetch_records(engine, limit=10)]
    assert sorted(stored) == [Decimal("0E-10"), Decimal("2E-10"), Decimal("2E-10")]
    (rolled,) = await _rollup_rows(engine)
    assert rolled["cost_usd"] == Decimal("4E-10")
    assert rolled["requests"] == 3


async def test_tags_and_units_keep_their_stored_form_whatever_mapping_holds_them(
    engine: AsyncEngine,
) -> None:
    record = make_record(
        1,
        tags=MappingProxyType({"env": "prod", "shard": 7}),
        units=MappingProxyType({"audio_seconds": Decimal("1.50"), "calls": Decimal("2")}),
    )
    await write_batch(engine, [record])
    (row,) = await fetch_records(engine, limit=1)
    assert row["tags"] == {"env": "prod", "shard": "7"}
    assert row["units"] == {"audio_seconds": Decimal("1.50"), "calls": Decimal("2")}


async def test_times_keep_microseconds_and_their_instant_across_offsets(
    engine: AsyncEngine,
) -> None:
    started = datetime(2026, 11, 3, 23, 30, 0, 1, tzinfo=timezone(timedelta(hours=-2, minutes=-30)))
    await write_batch(engine, [make_record(1, started_at=started)])
    (row,) = await fetch_records(engine, limit=1)
    assert row["started_at"] == started
    assert row["started_at"].utcoffset() == timedelta(0)
    (rolled,) = await _rollup_rows(engine)
    assert rolled["day"] == started.astimezone(UTC).date()  # 2026-11-04 UTC, not the local 3rd


def test_rollup_sums_cover_every_rollup_column() -> None:
    assert set(ROLLUP_SUMS) | set(ROLLUP_KEY) == {c.name for c in usage_daily.columns}


@pytest.mark.postgres
async def test_over_long_text_is_refused_not_truncated_on_postgresql(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine)
        with pytest.raises(DBAPIError, match="too long"):
            await write_batch(engine, [make_record(1, team="t" * 129)])  # team is VARCHAR(128)
        assert await fetch_records(engine, limit=10) == []
        assert await write_batch(engine, [make_record(1, team="t" * 128)]) == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("size", [63, 64, 65, 128, 129, 500])
async def test_a_batch_larger_than_one_insert_slice_is_written_whole_and_once(
    engine: AsyncEngine, size: int
) -> None:
    """SQLite inserts a batch in slices of 64 rows (one transaction): every slice boundary, with
    ids already in the ledger scattered across the slices, keeps each record exactly once."""
    already = [make_record(n, team="ads") for n in range(0, size, 3)]
    assert await write_batch(engine, already) == len(already)
    batch = [make_record(n, team="ads", cost_usd=Decimal("0.5")) for n in range(size)]
    assert await write_batch(engine, batch) == size - len(already)
    assert await write_batch(engine, batch) == 0
    rows = await fetch_records(engine, limit=1000)
    assert sorted(row["id"] for row in rows) == sorted(r.id for r in batch)
    kept = {r.id: r for r in already} | {
        r.id: r for r in batch if r.id not in {a.id for a in already}
    }
    assert await _rollup_rows(engine) == _expected(rollup_deltas(kept.values()))
