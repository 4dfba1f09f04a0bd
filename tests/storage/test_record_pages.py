"""``fetch_records`` keyset pages and tag filters on both backends: walking the pages gives every
row exactly once in ``(started_at, id)`` descending order, also when rows share a ``started_at`` and
when new rows arrive between pages."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger import write_batch
from storage.queries import MAX_RECORDS, fetch_records
from tests.support.ledger_records import make_record

START = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


async def walk(engine: AsyncEngine, size: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    before = None
    while True:
        rows = await fetch_records(engine, limit=size + 1, before=before, **filters)
        page = rows[:size]
        seen.extend(r["id"] for r in page)
        if len(rows) <= size:
            return seen
        before = (page[-1]["started_at"], page[-1]["id"])


async def test_pages_cover_every_row_once_in_order_with_ties(engine: AsyncEngine) -> None:
    rng = random.Random(12)
    # Many rows share a started_at (same microsecond): the id breaks the tie.
    records = [
        make_record(n, started_at=START + timedelta(microseconds=rng.choice([0, 1, 7, 999_999])))
        for n in range(157)
    ]
    await write_batch(engine, records)
    want = [r.id for r in sorted(records, key=lambda r: (r.started_at, r.id), reverse=True)]
    for size in (1, 2, 10, 156, 157, 158):
        assert await walk(engine, size) == want


async def test_rows_inserted_between_pages_do_not_repeat_or_skip(engine: AsyncEngine) -> None:
    old = [make_record(n, started_at=START + timedelta(seconds=n)) for n in range(50)]
    await write_batch(engine, old)
    first = await fetch_records(engine, limit=11)
    page, more = first[:10], first[10:]
    assert more
    # New calls land (newer, and one at exactly the cursor's started_at with a larger id).
    cursor = (page[-1]["started_at"], page[-1]["id"])
    newer = [
        make_record(1000 + n, started_at=START + timedelta(hours=1, seconds=n)) for n in range(5)
    ]
    tie = make_record(2000, id="zzzz-newer-same-instant", started_at=cursor[0])
    await write_batch(engine, [*newer, tie])
    rest: list[str] = []
    before: tuple[datetime, str] | None = cursor
    while before is not None:
        rows = await fetch_records(engine, limit=8, before=before)
        rest.extend(r["id"] for r in rows[:7])
        before = (rows[6]["started_at"], rows[6]["id"]) if len(rows) > 7 else None
    ids = [r["id"] for r in page] + rest
    assert ids == [r.id for r in sorted(old, key=lambda r: r.started_at, reverse=True)]


async def test_tag_filters_need_every_tag(engine: AsyncEngine) -> None:
    records = [
        make_record(0, tags={"env": "prod", "feature": "search"}),
        make_record(1, tags={"env": "prod"}),
        make_record(2, tags={"env": "dev", "feature": "search"}),
        make_record(3, tags={}),
        make_record(4, tags={"env": "prod=eu"}),  # '=' inside a value is part of the value
    ]
    await write_batch(engine, records)

    async def ids(**tags: str) -> set[str]:
        return {r["id"] for r in await fetch_records(engine, limit=100, tags=tags)}

    assert await ids(env="prod") == {records[0].id, records[1].id}
    assert await ids(env="prod", feature="search") == {records[0].id}
    assert await ids(feature="search") == {records[0].id, records[2].id}
    assert await ids(env="prod=eu") == {records[4].id}
    assert await ids(env="nope") == set()
    assert await ids(**{"x'; DROP TABLE usage_records; --": "1"}) == set()
    assert len(await fetch_records(engine, limit=100)) == 5


async def test_limit_is_capped_one_past_the_page_maximum(engine: AsyncEngine) -> None:
    await write_batch(engine, [make_record(n) for n in range(MAX_RECORDS + 5)])
    assert len(await fetch_records(engine, limit=10**9)) == MAX_RECORDS + 1
