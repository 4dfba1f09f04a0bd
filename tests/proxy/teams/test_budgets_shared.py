"""The tracker with a shared store (several replicas): who pays a round trip, what happens when
the store fails, where a call's cost lands."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal

import pytest

from proxy.teams.budgets import BudgetStage, BudgetTracker, Limit, Refusal, Reservation
from tests.support.budget_fakes import FakeClock, FakeLedger, FakeSharedStore
from tests.support.budget_fakes import chat_exchange as call
from tests.support.spend_ledger import at, make_record

NOON = at("2026-11-17T12:00:00Z")
TODAY = at("2026-11-17T00:00:00Z")


def tracker_with(
    store: FakeSharedStore, *limits: Limit, clock: FakeClock | None = None
) -> BudgetTracker:
    return BudgetTracker(limits, FakeLedger(), clock=clock or FakeClock(NOON), shared=store)


def limit(team: str, amount: str, action: str = "block", period: str = "daily") -> Limit:
    return Limit(team, period, Decimal(amount), action, Decimal(80))  # type: ignore[arg-type]


async def test_teams_without_a_budget_or_with_alerts_only_never_touch_the_store() -> None:
    store = FakeSharedStore()
    tracker = tracker_with(store, limit("ads", "1", action="alert"))
    assert await tracker.reserve("nobody", Decimal("5"), "c1") is None
    held = await tracker.reserve("ads", Decimal("5"), "c2")
    assert isinstance(held, Reservation) and not held.shared
    tracker.settle(held, "ads", Decimal("5"), NOON)
    tracker.settle(None, "nobody", Decimal("5"), NOON)
    await tracker.drain()
    assert store.calls == []


async def test_a_block_team_is_admitted_by_the_shared_row() -> None:
    store = FakeSharedStore()
    tracker = tracker_with(store, limit("search", "1.00"))
    first = await tracker.reserve("search", Decimal("0.60"), "c1")
    assert isinstance(first, Reservation) and set(first.shared) == {"daily"}
    second = await tracker.reserve("search", Decimal("0.60"), "c2")
    assert isinstance(second, Reservation)  # 0.60 < 1.00 when admitted
    refused = await tracker.reserve("search", Decimal("0.01"), "c3")
    assert isinstance(refused, Refusal)
    assert refused.resets_at == at("2026-11-18T00:00:00Z")
    tracker.settle(first, "search", Decimal("0.10"), NOON)
    tracker.settle(second, "search", Decimal("0.10"), NOON)
    await tracker.drain()
    assert store.rows[("search", "daily", TODAY)] == [Decimal("0.20"), Decimal(0)]
    assert tracker.reserved("search") == 0


async def test_store_down_admits_in_memory_logs_once_and_counts_the_cost_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeSharedStore(fail=True)
    tracker = tracker_with(store, limit("search", "1.00"))
    with caplog.at_level(logging.WARNING, logger="openai_meter.budgets"):
        held = [await tracker.reserve("search", Decimal("0.30"), f"c{i}") for i in range(5)]
    # In memory: the in-flight reservations still limit the burst (0.30 x 4 >= 1.00).
    assert [isinstance(h, Reservation) for h in held] == [True] * 4 + [False]
    assert sum("admitting locally" in r.getMessage() for r in caplog.records) == 1
    assert store.calls.count("reserve") == 1  # while failing, at most one try per second
    store.fail = False
    for h in held:
        if isinstance(h, Reservation):
            tracker.settle(h, "search", Decimal("0.25"), NOON)
    await tracker.drain()
    # Admitted without the store, their costs reach the shared row when they settle.
    assert store.rows[("search", "daily", TODAY)][0] == Decimal("1.00")


async def test_a_call_without_a_shared_hold_lands_in_its_own_period() -> None:
    clock = FakeClock(NOON + timedelta(days=1))  # the call started yesterday, finishes today
    store = FakeSharedStore()
    tracker = tracker_with(store, limit("search", "10"), clock=clock)
    tracker.settle(None, "search", Decimal("0.5"), NOON)
    await tracker.drain()
    assert store.rows == {("search", "daily", TODAY): [Decimal("0.5"), Decimal(0)]}


async def test_settle_retries_then_gives_up_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeSharedStore()
    tracker = tracker_with(store, limit("search", "10"))
    held = await tracker.reserve("search", Decimal("1"), "c1")
    store.fail = True
    with caplog.at_level(logging.WARNING, logger="openai_meter.budgets"):
        tracker.settle(held if isinstance(held, Reservation) else None, "search", Decimal("1"))
        await tracker.drain()
    assert store.calls.count("settle") == 3
    assert any("settle failed" in r.getMessage() for r in caplog.records)
    assert tracker.reserved("search") == 0  # this replica's own view is released anyway


async def test_the_stage_settles_refused_and_errored_calls_through_the_store() -> None:
    store = FakeSharedStore()
    tracker = tracker_with(store, limit("search", "1.00"))
    stage = BudgetStage(tracker, lambda exchange: Decimal("0.40"))
    exchanges = [call("search", 10) for _ in range(4)]
    outcomes = [await stage.on_request(e) for e in exchanges]
    assert [o is None for o in outcomes] == [True, True, True, False]  # 0.40 x 3 >= 1.00
    for e in exchanges[:3]:  # all three failed upstream: nothing spent, all released
        stage.on_record(e, make_record(NOON, team="search", cost=None, outcome="upstream_error"))
    await tracker.drain()
    assert store.rows[("search", "daily", TODAY)] == [Decimal(0), Decimal(0)]
    assert await stage.on_request(call("search", 10)) is None


async def test_the_refresh_loop_sweeps_expired_reservations() -> None:
    store = FakeSharedStore()
    tracker = tracker_with(store, limit("search", "1"))
    tracker.refresh_interval_s = 0.01
    task = asyncio.create_task(tracker.run())
    try:
        await asyncio.wait_for(store.swept.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
