"""Budgets over a real ledger: the one-query spend source on SQLite and PostgreSQL, and two
proxy processes (separate engines) on one PostgreSQL database enforcing one team budget together."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.teams.budgets import BudgetTracker, Limit, Refusal, Reservation
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.reports import spent_by_team
from tests.support.budget_fakes import FakeClock
from tests.support.spend_ledger import at, make_record


async def migrated(url: str) -> AsyncEngine:
    engine = create_engine(url)
    await upgrade(engine)
    return engine


async def test_spent_by_team_sums_exactly_per_window(engine: AsyncEngine) -> None:
    await write_batch(
        engine,
        [
            make_record("2026-11-01T00:00:00Z", team="search", cost="0.0000000001"),
            make_record("2026-11-17T00:00:00Z", team="search", cost="1.2345678901"),
            make_record("2026-11-17T11:59:59Z", team="search", cost="0.1"),
            make_record("2026-11-17T12:00:00Z", team="search", cost="100"),  # at until: out
            make_record("2026-11-17T10:00:00Z", team="search", cost=None),  # unpriced
            make_record("2026-11-17T10:00:00Z", team="ads", cost="7"),
            make_record("2026-10-31T23:59:59Z", team="search", cost="50"),  # last month
        ],
    )
    windows = {"daily": at("2026-11-17T00:00:00Z"), "monthly": at("2026-11-01T00:00:00Z")}
    result = await spent_by_team(engine, ["search", "idle"], windows, at("2026-11-17T12:00:00Z"))
    assert result == {
        "search": {"daily": Decimal("1.3345678901"), "monthly": Decimal("1.3345678902")},
        "idle": {"daily": Decimal(0), "monthly": Decimal(0)},
    }


@pytest.mark.postgres
async def test_two_processes_on_one_postgres_enforce_one_budget(postgres_url: str) -> None:
    now = at("2026-11-17T12:00:00Z")
    limit = Limit("search", "daily", Decimal("1.00"), "block", Decimal(80))
    engines = [await migrated(postgres_url), await migrated(postgres_url)]
    clocks = [FakeClock(now), FakeClock(now)]
    replicas = [
        BudgetTracker(
            [limit],
            lambda teams, windows, until, e=e: spent_by_team(e, teams, windows, until),
            clock=clock,
            settle_s=2.0,
        )
        for e, clock in zip(engines, clocks, strict=True)
    ]
    a, b = replicas
    try:
        for replica in replicas:
            await replica.refresh()

        async def call(replica: BudgetTracker, engine: AsyncEngine, cost: str) -> bool:
            admitted = replica.admit("search")
            if isinstance(admitted, Refusal):
                return False
            assert isinstance(admitted, Reservation)
            record = make_record(now - timedelta(seconds=10), team="search", cost=cost)
            await write_batch(engine, [record])  # this process's ledger writer
            replica.release(admitted)
            replica.record("search", record.started_at, record.cost_usd)
            return True

        assert await call(a, engines[0], "0.60")
        assert b.spent("search", "daily") == 0  # not yet refreshed
        for clock in clocks:
            clock.advance(seconds=3)  # past the settle window
        await b.refresh()
        assert b.spent("search", "daily") == Decimal("0.60")  # A's spend, from the shared ledger
        assert await call(b, engines[1], "0.40")  # 0.60 < 1.00: admitted, now exactly 1.00
        assert isinstance(b.admit("search"), Refusal)  # B knows at once (local part)
        for clock in clocks:
            clock.advance(seconds=3)
        await a.refresh()
        assert a.spent("search", "daily") == Decimal("1.00")
        assert isinstance(a.admit("search"), Refusal)  # and A after its next refresh
        await b.refresh()
        assert b.spent("search", "daily") == Decimal("1.00")  # counted once, not twice
    finally:
        for engine in engines:
            await engine.dispose()
