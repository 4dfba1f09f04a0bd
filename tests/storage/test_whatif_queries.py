"""``storage.whatif``: rejected-record counts only when the table exists; edge cases of call_groups."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.whatif import call_groups, rejected_counts


async def test_no_rejected_table_means_no_count(engine: AsyncEngine) -> None:
    assert await rejected_counts(engine) is None


async def test_rejected_counts_per_team_when_the_table_has_a_team(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE ledger_rejected (id TEXT, team TEXT, error TEXT)"))
        await conn.execute(
            text(
                "INSERT INTO ledger_rejected VALUES ('a','search','x'), ('b','search','y'),"
                " ('c', NULL, 'z')"
            )
        )
    assert await rejected_counts(engine) == {"search": 2, None: 1}


async def test_rejected_counts_in_total_without_a_team_column(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE ledger_rejected (id TEXT, row_json TEXT)"))
        await conn.execute(text("INSERT INTO ledger_rejected VALUES ('a','{}'), ('b','{}')"))
    assert await rejected_counts(engine) == {None: 2}


async def test_call_groups_refuse_unknown_dimensions_and_empty_windows(engine: AsyncEngine) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert await call_groups(engine, since=t, until=t) == []
    with pytest.raises(ValueError, match="group by"):
        await call_groups(engine, since=t, until=t, by=("colour",))
    with pytest.raises(ValueError, match="filter by"):
        await call_groups(engine, since=t, until=t, filters={"units": "x"})


async def test_spans_with_and_without_a_change_inside_the_window(engine: AsyncEngine) -> None:
    from storage.ledger import write_batch
    from tests.support.whatif_ledger import WINDOW, whatif_records

    await write_batch(engine, whatif_records())
    since, until = WINDOW
    cut = datetime(2025, 6, 10, tzinfo=UTC)
    one_span = await call_groups(engine, since=since, until=until, boundaries=[])
    two_spans = await call_groups(engine, since=since, until=until, boundaries=[cut])
    assert {g.at for g in one_span} <= {since} | {g.at for g in one_span if not g.summed}
    assert {g.at for g in two_spans if g.summed} == {since, cut}
    assert sum(g.count for g in one_span) == sum(g.count for g in two_spans) == 11
