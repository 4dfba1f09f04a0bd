"""``storage.whatif``: rejected-record counts per team in a window; edge cases of call_groups."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.schema import ledger_rejected
from storage.whatif import call_groups, rejected_counts


def rejected_row(record_id: str, team: str | None, started: datetime | None) -> dict[str, object]:
    return {
        "record_id": record_id,
        "row": "{}",
        "error": "refused",
        "first_seen_at": datetime(2026, 1, 2, tzinfo=UTC),
        "retries": 0,
        "started_at": started,
        "team": team,
    }


async def test_rejected_counts_per_team_in_the_window(engine: AsyncEngine) -> None:
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert await rejected_counts(engine, since, until) == {}
    inside = datetime(2026, 1, 15, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            ledger_rejected.insert(),
            [
                rejected_row("a", "search", inside),
                rejected_row("b", "search", since),
                rejected_row("c", None, inside),
                rejected_row("d", "ads", until),  # until is exclusive
                rejected_row("e", "ads", None),  # start unknown: in no window
            ],
        )
    assert await rejected_counts(engine, since, until) == {"search": 2, None: 1}


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
