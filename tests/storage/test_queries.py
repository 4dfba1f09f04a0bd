"""Report queries: rollup and raw paths agree to the last digit; records come newest first."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger import write_batch
from storage.queries import fetch_records, spend, spent
from storage.record import UsageRecord
from tests.support.ledger_records import make_record

START = datetime(2026, 10, 30, 0, 0, tzinfo=UTC)
FINGERPRINT_KEY = "sha256:0123456789ab"


def dataset() -> list[UsageRecord]:
    records = []
    for n in range(300):
        records.append(
            make_record(
                n,
                started_at=START + timedelta(hours=n * 0.37),
                team=("search", "ads", "unassigned")[n % 3],
                model=("gpt-4o", "gpt-4o-mini", None)[n % 4 % 3],
                project=f"proj_{n % 2}",
                service_tier=("default", "flex", None)[n % 3],
                # a key-like tag key is stored as its fingerprint: ':' in a JSON key
                tags={"env": "prod", FINGERPRINT_KEY: "ab"[n % 2]} if n % 5 else {},
                cost_usd=None if n % 11 == 0 else Decimal(n).scaleb(-9) + Decimal("0.0000000003"),
                usage_source="estimated" if n % 13 == 0 else "reported",
            )
        )
    return records


def expected_spend(
    records: list[UsageRecord], since: datetime, until: datetime, by: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {
            "requests": 0,
            "cost_usd": Decimal(0),
            "unpriced_requests": 0,
            "estimated_requests": 0,
            "input_tokens": 0,
        }
    )
    for r in records:
        if not since <= r.started_at < until:
            continue
        key = []
        for dim in by:
            if dim == "day":
                key.append(r.started_at.date().isoformat())
            elif dim == "month":
                key.append(r.started_at.strftime("%Y-%m"))
            elif dim.startswith("tag:"):
                key.append(r.tags.get(dim[4:]))
            else:
                key.append(getattr(r, dim))
        row = out[tuple(key)]
        row["requests"] += 1
        row["input_tokens"] += r.input_tokens
        row["unpriced_requests"] += r.cost_usd is None
        row["estimated_requests"] += r.usage_source == "estimated"
        row["cost_usd"] += r.cost_usd or 0
    return dict(out)


@pytest.mark.parametrize(
    "by",
    [
        (),
        ("team",),
        ("team", "model"),
        ("day",),
        ("month", "service_tier"),
        ("endpoint",),
        ("project",),
        ("tag:env", "team"),
        (f"tag:{FINGERPRINT_KEY}", "tag:env"),
        ("user",),
    ],
)
@pytest.mark.parametrize(
    "window",
    [
        (START, START + timedelta(days=5)),  # whole days: rollup only
        (START + timedelta(hours=7, minutes=13), START + timedelta(days=4, hours=3)),  # edges raw
        (START + timedelta(hours=1), START + timedelta(hours=20)),  # inside one day
    ],
)
async def test_spend_matches_the_raw_rows(
    engine: AsyncEngine, by: tuple[str, ...], window: tuple[datetime, datetime]
) -> None:
    records = dataset()
    await write_batch(engine, records)
    since, until = window
    rows = await spend(engine, since=since, until=until, by=by)
    got = {
        tuple(r[d] for d in by): {
            k: r[k]
            for k in (
                "requests",
                "cost_usd",
                "unpriced_requests",
                "estimated_requests",
                "input_tokens",
            )
        }
        for r in rows
    }
    assert got == expected_spend(records, since, until, by)
    assert all(type(r["requests"]) is int and isinstance(r["cost_usd"], Decimal) for r in rows)


async def test_spend_filters_and_spent(engine: AsyncEngine) -> None:
    records = dataset()
    await write_batch(engine, records)
    since, until = START + timedelta(hours=5), START + timedelta(days=3, hours=2)
    want = expected_spend([r for r in records if r.team == "ads"], since, until, ())[()]
    assert await spent(engine, "ads", since, until) == want["cost_usd"]
    (row,) = await spend(
        engine, since=since, until=until, filters={"team": "ads", "project": "proj_1"}
    )
    assert row["requests"] == sum(
        1
        for r in records
        if r.team == "ads" and r.project == "proj_1" and since <= r.started_at < until
    )
    assert await spent(engine, "nobody", since, until) == Decimal(0)


async def test_fetch_records_newest_first_with_filters(engine: AsyncEngine) -> None:
    records = dataset()
    await write_batch(engine, records)
    rows = await fetch_records(engine, limit=5, team="search", model="gpt-4o")
    want = sorted(
        (r for r in records if r.team == "search" and r.model == "gpt-4o"),
        key=lambda r: r.started_at,
        reverse=True,
    )[:5]
    assert [r["id"] for r in rows] == [r.id for r in want]
    since, until = START + timedelta(days=1), START + timedelta(days=2)
    window = await fetch_records(engine, limit=1000, since=since, until=until)
    assert len(window) == sum(1 for r in records if since <= r.started_at < until)
    assert len(await fetch_records(engine, limit=5000)) == 300  # capped at 1000


async def test_fetch_records_by_a_fingerprinted_tag_key(engine: AsyncEngine) -> None:
    records = dataset()
    await write_batch(engine, records)
    rows = await fetch_records(engine, limit=1000, tags={FINGERPRINT_KEY: "a", "env": "prod"})
    assert sorted(r["id"] for r in rows) == sorted(
        r.id for r in records if r.tags.get(FINGERPRINT_KEY) == "a"
    )
    assert rows and all(r["tags"][FINGERPRINT_KEY] == "a" for r in rows)
