"""Budgets: period arithmetic, the tracker (ledger + local + in-flight), the stage's 429."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.http.exchange import Attribution, Exchange
from proxy.settings import BudgetSettings, TeamSettings
from proxy.teams.budgets import (
    BudgetStage,
    BudgetTracker,
    Limit,
    Refusal,
    Reservation,
    check,
    limits_from_settings,
    period_bounds,
)
from tests.support.budget_fakes import FakeClock, FakeLedger
from tests.support.spend_ledger import make_record

UTC_TZ = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# ---------------------------------------------------------------- periods


def test_daily_and_monthly_bounds_in_utc() -> None:
    now = t("2026-11-17T15:00:00Z")
    assert period_bounds("daily", now, UTC_TZ) == (
        t("2026-11-17T00:00:00Z"),
        t("2026-11-18T00:00:00Z"),
    )
    assert period_bounds("monthly", now, UTC_TZ) == (
        t("2026-11-01T00:00:00Z"),
        t("2026-12-01T00:00:00Z"),
    )
    december = t("2026-12-31T23:59:59Z")
    assert period_bounds("monthly", december, UTC_TZ) == (
        t("2026-12-01T00:00:00Z"),
        t("2027-01-01T00:00:00Z"),
    )


def test_bounds_in_a_timezone_with_dst() -> None:
    # 23:30 UTC on Nov 17 is already Nov 18 in Paris (UTC+1).
    start, end = period_bounds("daily", t("2026-11-17T23:30:00Z"), PARIS)
    assert (start, end) == (t("2026-11-17T23:00:00Z"), t("2026-11-18T23:00:00Z"))
    # The spring-forward day is 23 hours long on the wall clock.
    start, end = period_bounds("daily", t("2026-03-29T12:00:00Z"), PARIS)
    assert end - start == timedelta(hours=23)
    start, end = period_bounds("monthly", t("2026-03-15T12:00:00Z"), PARIS)
    assert (start, end) == (t("2026-02-28T23:00:00Z"), t("2026-03-31T22:00:00Z"))


def test_limits_from_settings() -> None:
    teams = {
        "search": TeamSettings(
            budget=BudgetSettings(daily_usd=Decimal("10"), monthly_usd=Decimal("200"))
        ),
        "ads": TeamSettings(budget=BudgetSettings(monthly_usd=Decimal("5"), action="alert")),
        "free": TeamSettings(),
    }
    limits = limits_from_settings(teams)
    assert [(x.team, x.period, x.amount, x.action) for x in limits] == [
        ("search", "daily", Decimal("10"), "block"),
        ("search", "monthly", Decimal("200"), "block"),
        ("ads", "monthly", Decimal("5"), "alert"),
    ]


@pytest.mark.parametrize(
    ("spent", "verdict"),
    [
        ("0", "ok"),
        ("7.99", "ok"),
        ("8", "warn"),
        ("9.9999999999", "warn"),
        ("10", "reached"),
        ("11", "reached"),
    ],
)
def test_check_refuses_once_spent_reaches_the_limit(spent: str, verdict: str) -> None:
    limit = Limit("a", "daily", Decimal("10"), "block", Decimal("80"))
    assert check(limit, Decimal(spent)) == verdict


def test_zero_limit_refuses_everything() -> None:
    assert check(Limit("a", "daily", Decimal(0), "block", Decimal(80)), Decimal(0)) == "reached"


# ---------------------------------------------------------------- tracker

NOON = t("2026-11-17T12:00:00Z")


def tracker_for(
    ledger: FakeLedger,
    clock: FakeClock,
    *limits: Limit,
    **kwargs: object,
) -> BudgetTracker:
    return BudgetTracker(limits, ledger, clock=clock, **kwargs)  # type: ignore[arg-type]


def daily(team: str, amount: str, action: str = "block") -> Limit:
    return Limit(team, "daily", Decimal(amount), action, Decimal(80))  # type: ignore[arg-type]


def finish(
    tracker: BudgetTracker, admitted: object, team: str, started: datetime, cost: str | None
) -> None:
    if isinstance(admitted, Reservation):
        tracker.release(admitted)
    tracker.record(team, started, Decimal(cost) if cost is not None else None)


async def test_block_once_spent_reaches_limit_other_team_unaffected() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "1.00"), daily("ads", "1.00"))
    await tracker.refresh()
    first = tracker.admit("search")
    assert isinstance(first, Reservation)
    finish(tracker, first, "search", NOON, "0.60")
    second = tracker.admit("search")  # 0.60 < 1.00
    assert isinstance(second, Reservation)
    finish(tracker, second, "search", NOON, "0.40")  # exactly 1.00 now
    refused = tracker.admit("search")
    assert isinstance(refused, Refusal)
    assert refused.spent == Decimal("1.00")
    assert refused.resets_at == t("2026-11-18T00:00:00Z")
    assert isinstance(tracker.admit("ads"), Reservation)
    assert tracker.admit("nobody") is None  # no budget, nothing tracked


async def test_budget_resets_at_the_period_boundary() -> None:
    clock, ledger = FakeClock(t("2026-11-17T23:59:00Z")), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "1"))
    await tracker.refresh()
    finish(tracker, tracker.admit("search"), "search", clock.now, "5")
    ledger.add("search", clock.now, "5")  # the writer landed it
    assert isinstance(tracker.admit("search"), Refusal)
    clock.advance(minutes=1)  # midnight: a new day
    today = tracker.admit("search")
    assert isinstance(today, Reservation)
    tracker.release(today)
    await tracker.refresh()  # the ledger still holds yesterday's 5: it must not count today
    assert tracker.spent("search", "daily") == 0
    assert isinstance(tracker.admit("search"), Reservation)


async def test_other_replicas_spend_arrives_with_the_refresh() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "1"), settle_s=2.0)
    await tracker.refresh()
    ledger.add("search", NOON - timedelta(minutes=5), "0.70")  # another process
    assert tracker.spent("search", "daily") == 0  # no DB round trip on the request path
    await tracker.refresh()
    assert tracker.spent("search", "daily") == Decimal("0.70")
    ledger.add("search", NOON - timedelta(minutes=4), "0.30")
    clock.advance(seconds=1)
    await tracker.refresh()
    assert isinstance(tracker.admit("search"), Refusal)


async def test_local_records_count_once_before_and_after_they_reach_the_ledger() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "100"), settle_s=2.0)
    await tracker.refresh()
    started = clock.now
    tracker.record("search", started, Decimal("0.25"))
    ledger.add("search", started, "0.25")  # written 200 ms later
    assert tracker.spent("search", "daily") == Decimal("0.25")
    clock.advance(seconds=1)  # inside the settle window: the ledger part excludes it
    await tracker.refresh()
    assert tracker.spent("search", "daily") == Decimal("0.25")
    clock.advance(seconds=5)  # past it: now the ledger part has it, the local part not
    await tracker.refresh()
    assert tracker.spent("search", "daily") == Decimal("0.25")


async def test_unpriced_calls_add_nothing() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "1"))
    tracker.record("search", NOON, None)
    assert tracker.spent("search", "daily") == 0


async def test_in_flight_reservations_limit_a_burst() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "1.00"))
    await tracker.refresh()
    # Yesterday's calls were cheap: they teach the tracker nothing (reservations come from the
    # request: here each call may cost up to 0.25).
    for _ in range(200):
        tracker.record("search", NOON - timedelta(days=1), Decimal("0.0001"))
    admitted = []
    while isinstance(outcome := tracker.admit("search", Decimal("0.25")), Reservation):
        admitted.append(outcome)
        assert len(admitted) < 100
    # Nothing spent yet, but the calls in flight (0.25 each) already cover the limit.
    assert len(admitted) == 4
    assert tracker.reserved("search") == Decimal("1.00")
    for reservation in admitted:
        finish(tracker, reservation, "search", NOON, "0.25")
    assert tracker.reserved("search") == 0
    assert tracker.spent("search", "daily") == Decimal("1.00")


async def test_database_down_keeps_last_values_and_local_spend() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    ledger.add("search", NOON - timedelta(hours=1), "0.50")
    tracker = tracker_for(ledger, clock, daily("search", "1"))
    await tracker.refresh()
    ledger.fail = True
    with pytest.raises(ConnectionError):
        await tracker.refresh()
    tracker.record("search", NOON, Decimal("0.50"))
    assert isinstance(tracker.admit("search"), Refusal)


async def test_one_query_per_refresh_for_all_teams() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    limits = [daily(f"team{i}", "1") for i in range(20)]
    limits.append(Limit("team0", "monthly", Decimal(5), "block", Decimal(80)))
    tracker = tracker_for(ledger, clock, *limits)
    await tracker.refresh()
    assert ledger.queries == 1
    for _ in range(100):
        tracker.admit("team3")
    assert ledger.queries == 1


async def test_alert_budget_never_refuses_but_logs_and_publishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    gauges: list[tuple[str, str, Decimal, Decimal | None]] = []
    tracker = tracker_for(
        ledger,
        clock,
        daily("ads", "1", action="alert"),
        on_gauge=lambda *args: gauges.append(args),
    )
    await tracker.refresh()
    with caplog.at_level(logging.WARNING, logger="openai_meter.budgets"):
        tracker.record("ads", NOON, Decimal("0.85"))
        tracker.record("ads", NOON, Decimal("0.50"))
        assert isinstance(tracker.admit("ads"), Reservation)
        assert isinstance(tracker.admit("ads"), Reservation)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("budget warning" in m for m in messages) == 1
    assert sum("budget reached" in m for m in messages) == 1
    assert gauges[-1] == ("ads", "daily", Decimal("1.35"), Decimal("1"))


# ---------------------------------------------------------------- stage


def exchange_for(team: str) -> Exchange:
    exchange = Exchange(
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        endpoint="chat.completions",
        request_headers=CIMultiDict(),
    )
    exchange.attribution = Attribution(team=team)
    return exchange


async def test_stage_refuses_with_openai_shaped_429_that_sdks_do_not_retry() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "0.01"))
    stage = BudgetStage(tracker)
    exchange = exchange_for("search")
    assert await stage.on_request(exchange) is None
    stage.on_record(exchange, make_record(NOON, team="search", cost="0.01"))
    assert tracker.reserved("search") == 0
    response = await stage.on_request(exchange_for("search"))
    assert isinstance(response, web.Response)
    assert response.status == 429
    assert response.headers["x-should-retry"] == "false"
    assert response.body is not None
    error = orjson.loads(bytes(response.body))["error"]  # type: ignore[arg-type]
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "budget_exceeded"
    assert "search" in error["message"] and "2026-11-18T00:00:00Z" in error["message"]
    assert await stage.on_request(exchange_for("ads")) is None


async def test_stage_settles_records_for_calls_it_never_admitted() -> None:
    clock, ledger = FakeClock(NOON), FakeLedger()
    tracker = tracker_for(ledger, clock, daily("search", "1"))
    stage = BudgetStage(tracker)
    stage.on_record(exchange_for("search"), make_record(NOON, team="search", cost="0.3"))
    assert tracker.spent("search", "daily") == Decimal("0.3")
