"""The budget_notifications table decides which replica sends an alert: insert-if-absent on
(team, period, period_start, event), on SQLite and PostgreSQL, under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.budget_notifications import (
    TEAM_WIDTH,
    NotificationKey,
    Numbers,
    SqlNotificationStore,
    team_key,
)
from storage.engine import create_engine
from storage.migrate import upgrade

DAY = datetime(2026, 11, 17, tzinfo=UTC)
YESTERDAY = datetime(2026, 11, 16, tzinfo=UTC)


def key(event: str, team: str = "search", start: datetime = DAY) -> NotificationKey:
    return NotificationKey(team, "daily", start, event)


async def test_a_key_is_claimed_once_and_finishing_records_the_outcome(engine: AsyncEngine) -> None:
    store = SqlNotificationStore(engine)
    assert await store.claim(key("warn"))
    assert not await store.claim(key("warn"))
    assert await store.claim(key("warn", team="ads"))  # other team, other period start: own keys
    assert await store.claim(key("warn", start=YESTERDAY))
    assert await store.claim(key("exceeded"), implies=["warn"])  # warn already there: untouched
    await store.finish(key("warn"), "delivered")
    rows = {(r["team"], r["period_start"], r["event"]): r for r in await store.rows()}
    assert len(rows) == 4
    assert rows[("search", DAY, "warn")]["state"] == "delivered"
    assert rows[("search", DAY, "warn")]["finished_at"] is not None
    assert rows[("search", DAY, "exceeded")]["state"] == "claimed"


async def test_exceeded_marks_the_warn_implied_so_nobody_sends_it(engine: AsyncEngine) -> None:
    store = SqlNotificationStore(engine)
    assert await store.claim(key("exceeded"), implies=["warn"])
    assert not await store.claim(key("warn"))
    assert {(r["event"], r["state"]) for r in await store.rows()} == {
        ("exceeded", "claimed"),
        ("warn", "implied"),
    }


async def test_a_reset_needs_an_alert_in_the_previous_period(engine: AsyncEngine) -> None:
    store = SqlNotificationStore(engine)
    assert not await store.claim_reset(key("reset"), YESTERDAY)  # nothing happened yesterday
    assert await store.claim(key("warn", team="ads", start=YESTERDAY))  # another team's alert
    assert not await store.claim_reset(key("reset"), YESTERDAY)
    assert await store.claim(key("warn", start=YESTERDAY))
    assert await store.claim_reset(key("reset"), YESTERDAY)
    assert not await store.claim_reset(key("reset"), YESTERDAY)  # once
    assert await store.claim(key("reset", start=YESTERDAY)) is True  # a reset is no alert...
    tomorrow = datetime(2026, 11, 18, tzinfo=UTC)
    assert not await store.claim_reset(key("reset", start=tomorrow), DAY)  # ...for the next one


@pytest.mark.parametrize(
    "team",
    [
        "x" * (TEAM_WIDTH + 1),
        "é" * 10_000,
        "nul\x00team",
        "lone\ud800surrogate",
        "",
        "t" * TEAM_WIDTH,
    ],
)
async def test_any_team_name_can_be_claimed(engine: AsyncEngine, team: str) -> None:
    store = SqlNotificationStore(engine)
    assert await store.claim(key("warn", team=team))
    assert not await store.claim(key("warn", team=team))
    assert await store.claim(key("warn", start=YESTERDAY, team=team))
    assert await store.claim_reset(key("reset", team=team), YESTERDAY)


@given(st.text(max_size=400), st.text(max_size=400))
def test_team_keys_fit_the_column_and_stay_distinct(a: str, b: str) -> None:
    assert len(team_key(a)) <= TEAM_WIDTH
    assert "\x00" not in team_key(a)
    assert team_key(a).encode("utf-8") or a == ""
    if a != b:
        assert team_key(a) != team_key(b)


def test_long_names_sharing_a_prefix_do_not_collide() -> None:
    base = "p" * 500
    assert team_key(base + "a") != team_key(base + "b")
    assert team_key("search") == "search"


async def test_stale_claims_keep_their_numbers_and_one_replica_takes_each_over(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    old = SqlNotificationStore(engine, clock=lambda: now - timedelta(minutes=10))
    exact = Numbers(Decimal("1234567.0000000001"), Decimal("2000000"), Decimal("80.5"))
    assert await old.claim(key("exceeded"), numbers=exact, implies=["warn"])
    huge = Numbers(Decimal("1E+100") + 1, Decimal(1), Decimal(80))  # wider than the column
    assert await old.claim(key("warn", team="ads"), numbers=huge)
    assert await old.claim(key("warn", team="bare"))  # no numbers (an older writer)
    assert await old.claim(key("warn", team="done"))
    await old.finish(key("warn", team="done"), "delivered")
    store = SqlNotificationStore(engine)
    assert await store.claim(key("warn", team="fresh"), numbers=exact)  # claimed just now

    stale = await store.stale_claims(older_than_s=300)
    by_team = {c.key.team: c for c in stale}
    assert set(by_team) == {"search", "ads", "bare"}  # not implied, finished or recent ones
    assert by_team["search"].key == key("exceeded")
    assert by_team["search"].numbers == exact
    ads = by_team["ads"].numbers
    assert ads is not None and ads.spent == Decimal("1E+100")  # approximate, but a number
    assert by_team["bare"].numbers is None
    assert await store.stale_claims(older_than_s=3600) == []

    racers = [SqlNotificationStore(engine) for _ in range(5)]
    won = await asyncio.gather(*(r.reclaim(by_team["search"]) for r in racers))
    assert won.count(True) == 1
    assert "search" not in {c.key.team for c in await store.stale_claims(older_than_s=300)}


@pytest.mark.postgres
async def test_replicas_racing_for_one_key_on_postgres_one_wins(postgres_url: str) -> None:
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        await upgrade(engines[0])
        stores = [SqlNotificationStore(e) for e in engines]
        for n in range(10):  # 30 racers per key, three engines (three connection pools)
            team = f"team-{n}"
            await stores[0].claim(key("warn", team=team, start=YESTERDAY))
            won = await asyncio.gather(*(s.claim(key("exceeded", team=team)) for s in stores * 10))
            assert won.count(True) == 1
            resets = await asyncio.gather(
                *(s.claim_reset(key("reset", team=team), YESTERDAY) for s in stores * 10)
            )
            assert resets.count(True) == 1
        assert len(await stores[1].rows()) == 30
    finally:
        for engine in engines:
            await engine.dispose()
