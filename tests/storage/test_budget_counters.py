"""Shared budget reservations on PostgreSQL: one row per team and period, one statement per
admission and per settlement, atomic across connections (replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest

from storage.budget_counters import SharedReservations, Window
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from tests.support.spend_ledger import at, make_record

pytestmark = pytest.mark.postgres

NOON = at("2026-11-17T12:00:00Z")
DAY = Window(at("2026-11-17T00:00:00Z"), at("2026-11-18T00:00:00Z"), Decimal("1.00"))
MONTH = Window(at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"), Decimal("5.00"))
LATER = NOON + timedelta(hours=1)


@pytest.fixture
async def url(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine)
        await write_batch(
            engine,
            [
                make_record("2026-11-17T08:00:00Z", team="search", cost="0.40"),
                make_record("2026-11-03T08:00:00Z", team="search", cost="4.00"),
                make_record("2026-11-17T08:00:00Z", team="ads", cost="9"),
            ],
        )
    finally:
        await engine.dispose()
    return postgres_url


@pytest.fixture
async def store(url: str) -> AsyncIterator[SharedReservations]:
    s = await SharedReservations.connect(url)
    try:
        yield s
    finally:
        await s.close()


async def test_first_call_creates_the_row_from_the_ledger_then_reserves(
    store: SharedReservations,
) -> None:
    admission = await store.reserve("search", "c1", Decimal("0.30"), {"daily": DAY}, LATER)
    assert admission.admitted
    assert admission.rows["daily"].spent == Decimal("0.40")  # what the ledger held
    assert admission.rows["daily"].reserved == 0  # state before this call
    second = await store.reserve("search", "c2", Decimal("0.30"), {"daily": DAY}, LATER)
    assert second.admitted and second.rows["daily"].reserved == Decimal("0.30")
    # 0.40 + 0.60 reserved = 1.00: reached, refused; nothing held for it.
    third = await store.reserve("search", "c3", Decimal("0.01"), {"daily": DAY}, LATER)
    assert not third.admitted
    assert third.rows["daily"].reserved == Decimal("0.60")
    await store.settle("search", "c1", {"daily": DAY}, Decimal("0.05"))  # cost less than held
    fourth = await store.reserve("search", "c4", Decimal("0.01"), {"daily": DAY}, LATER)
    assert fourth.admitted
    assert fourth.rows["daily"].spent == Decimal("0.45")
    assert fourth.rows["daily"].reserved == Decimal("0.30")


async def test_all_periods_or_none(store: SharedReservations) -> None:
    windows = {"daily": DAY, "monthly": MONTH}
    # month: 4.40 spent of 5.00; day: 0.40 of 1.00. A month-only hold of 0.60 reaches the month.
    assert (await store.reserve("search", "a", Decimal("0.60"), {"monthly": MONTH}, LATER)).admitted
    refused = await store.reserve("search", "b", Decimal("0.10"), windows, LATER)
    assert not refused.admitted
    assert refused.rows["daily"].admitted and not refused.rows["monthly"].admitted
    # The day's row admitted it but the month refused: the day's part was undone.
    probe = await store.reserve("search", "c", Decimal("0"), {"daily": DAY}, LATER)
    assert probe.admitted and probe.rows["daily"].reserved == 0


async def test_settle_without_reservation_adds_the_cost(store: SharedReservations) -> None:
    await store.reserve("search", "a", Decimal("0.10"), {"daily": DAY}, LATER)
    await store.settle("search", "a", {"daily": DAY}, Decimal("0.10"))
    await store.settle("search", "a", {"daily": DAY}, Decimal("0"))  # twice: releases nothing more
    await store.settle("search", "never-reserved", {"daily": DAY}, Decimal("0.20"))
    probe = await store.reserve("search", "p", Decimal("0"), {"daily": DAY}, LATER)
    assert probe.rows["daily"].spent == Decimal("0.70")
    assert probe.rows["daily"].reserved == 0


async def test_a_dead_replicas_reservations_expire(store: SharedReservations) -> None:
    await store.reserve("search", "dies", Decimal("0.60"), {"daily": DAY}, NOON)  # expires at noon
    assert not (await store.reserve("search", "x", Decimal("0"), {"daily": DAY}, LATER)).admitted
    await store.sweep(NOON - timedelta(seconds=1))  # not yet
    assert not (await store.reserve("search", "y", Decimal("0"), {"daily": DAY}, LATER)).admitted
    await store.sweep(NOON + timedelta(seconds=1))
    admitted = await store.reserve("search", "z", Decimal("0"), {"daily": DAY}, LATER)
    assert admitted.admitted and admitted.rows["daily"].reserved == 0
    await store.settle("search", "dies", {"daily": DAY}, Decimal("0.60"))  # finishes after all
    probe = await store.reserve("search", "p", Decimal("0"), {"daily": DAY}, LATER)
    assert probe.rows["daily"].spent == Decimal("1.00")
    assert probe.rows["daily"].reserved == 0


async def test_concurrent_admissions_from_three_replicas_never_exceed_the_limit(
    url: str,
) -> None:
    """300 reservations of 0.01 at once from three pools: exactly the 60 that fit are admitted."""
    stores = [await SharedReservations.connect(url) for _ in range(3)]
    try:
        await stores[0].reserve("search", "warm", Decimal("0"), {"daily": DAY}, LATER)

        async def one(i: int) -> bool:
            store = stores[i % 3]
            admission = await store.reserve(
                "search", f"c{i}", Decimal("0.01"), {"daily": DAY}, LATER
            )
            return admission.admitted

        results = await asyncio.gather(*(one(i) for i in range(300)))
        assert sum(results) == 60  # 0.40 + 60 x 0.01 = 1.00
        probe = await stores[1].reserve("search", "p", Decimal("0"), {"daily": DAY}, LATER)
        assert probe.rows["daily"].reserved == Decimal("0.60")
    finally:
        for store in stores:
            await store.close()


async def test_hostile_team_names_are_parameters_not_sql(store: SharedReservations) -> None:
    team = "x'); DROP TABLE budget_counters; --\u00e9\u2603"
    assert (await store.reserve(team, "a", Decimal("0.1"), {"daily": DAY}, LATER)).admitted
    assert (await store.reserve("search", "b", Decimal("0"), {"daily": DAY}, LATER)).admitted


async def test_sqlite_is_not_shared() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        await SharedReservations.connect("sqlite:///x.db")


async def test_an_unreachable_database_is_not_an_error_at_start_and_fails_fast() -> None:
    store = await SharedReservations.connect("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(OSError):
            await store.reserve("search", "a", Decimal("0.1"), {"daily": DAY}, LATER)
    finally:
        await store.close()
