"""Reservations from the request (issue 11): the overshoot scenarios at the stage level.

Bound (docs/budgets.md): spend after the crossing <= the reservations of the calls in flight at
the crossing, and a team cannot lower the reservation by teaching the proxy cheap calls.
Prices: FakePricer (1.00 in / 4.00 out per 1M tokens), so a call asking for ``max_tokens=37_500``
may cost 0.15 plus its input.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from proxy.http.exchange import Exchange
from proxy.teams.budgets import BudgetStage, BudgetTracker, Limit, Reservation
from proxy.usage.ceiling import CostCeiling
from tests.support.budget_fakes import FakeClock, FakeLedger
from tests.support.budget_fakes import chat_exchange as call
from tests.support.spend_ledger import at, make_record
from tests.support.usage_fakes import FakePricer

NOON = at("2026-11-17T12:00:00Z")
LIMIT = Decimal("1.50")
EXPENSIVE_OUTPUT = 37_500  # x 4.00 / 1M = 0.15
MILLION = Decimal(1_000_000)


def real_cost(output_tokens: int) -> Decimal:
    return (Decimal(12) + Decimal(output_tokens) * 4) / MILLION  # 12 input tokens reported


def setup(*teams: str) -> tuple[BudgetTracker, BudgetStage]:
    limits = [Limit(team, "daily", LIMIT, "block", Decimal(80)) for team in teams]
    tracker = BudgetTracker(limits, FakeLedger(), clock=FakeClock(NOON))
    return tracker, BudgetStage(tracker, CostCeiling(FakePricer()))


async def run_one(stage: BudgetStage, team: str, max_tokens: int, output: int) -> bool:
    exchange = call(team, max_tokens)
    if await stage.on_request(exchange) is not None:
        stage.on_record(exchange, make_record(NOON, team=team, cost="0", outcome="refused"))
        return False
    stage.on_record(exchange, make_record(NOON, team=team, cost=str(real_cost(output))))
    return True


async def burst(stage: BudgetStage, team: str, count: int) -> tuple[list[Exchange], Decimal]:
    """``count`` expensive calls admitted or refused while none has finished (all in flight)."""
    admitted: list[Exchange] = []
    for _ in range(count):
        exchange = call(team, EXPENSIVE_OUTPUT)
        if await stage.on_request(exchange) is None:
            admitted.append(exchange)
    in_flight = sum((e.extras["budgets.reservation"].amount for e in admitted), start=Decimal(0))
    return admitted, in_flight


def finish_all(stage: BudgetStage, team: str, admitted: list[Exchange]) -> None:
    for exchange in admitted:
        record = make_record(NOON, team=team, cost=str(real_cost(EXPENSIVE_OUTPUT)))
        stage.on_record(exchange, record)


async def test_teaching_cheap_calls_does_not_open_the_gate() -> None:
    """9 calls at 0.15, 20 near-free calls, then 100 concurrent 0.15 calls (was: all 100, $16.35)."""
    tracker, stage = setup("search")
    for _ in range(9):
        assert await run_one(stage, "search", EXPENSIVE_OUTPUT, EXPENSIVE_OUTPUT)
    for _ in range(20):
        assert await run_one(stage, "search", 1, 1)
    before = tracker.spent("search", "daily")
    assert before < LIMIT
    admitted, in_flight = await burst(stage, "search", 100)
    assert len(admitted) == 1  # 1.35 + one reservation of >= 0.15 covers the limit
    finish_all(stage, "search", admitted)
    spent = tracker.spent("search", "daily")
    assert spent >= LIMIT  # the limit was crossed...
    assert spent - LIMIT <= in_flight  # ...by no more than the reservations in flight
    assert tracker.reserved("search") == 0


async def test_a_team_whose_only_call_was_tiny_gets_only_what_fits() -> None:
    """One tiny call, then 100 concurrent 0.15 calls (was: 100 of 100 admitted, $15.00)."""
    tracker, stage = setup("fresh")
    assert await run_one(stage, "fresh", 1, 1)
    admitted, in_flight = await burst(stage, "fresh", 100)
    assert len(admitted) == 10  # 10 x (0.15 + input) >= 1.50
    finish_all(stage, "fresh", admitted)
    spent = tracker.spent("fresh", "daily")
    assert LIMIT <= spent <= LIMIT + in_flight
    assert spent < Decimal("1.51")


async def test_reservation_is_the_requests_ceiling_whatever_the_history() -> None:
    tracker, stage = setup("search")
    for _ in range(50):
        assert await run_one(stage, "search", 1, 1)
    exchange = call("search", EXPENSIVE_OUTPUT)
    assert await stage.on_request(exchange) is None
    held: Any = exchange.extras["budgets.reservation"]
    assert isinstance(held, Reservation)
    assert (
        held.amount
        == (Decimal(len(exchange.request_body or b"")) + Decimal(EXPENSIVE_OUTPUT) * 4) / MILLION
    )
    assert tracker.reserved("search") == held.amount


async def test_errors_and_refusals_release_the_reservation() -> None:
    tracker, stage = setup("search")
    for outcome, cost in (("upstream_error", None), ("refused", "0"), ("client_disconnect", None)):
        exchange = call("search", EXPENSIVE_OUTPUT)
        assert await stage.on_request(exchange) is None
        assert tracker.reserved("search") > 0
        stage.on_record(exchange, make_record(NOON, team="search", cost=cost, outcome=outcome))
        assert tracker.reserved("search") == 0
    assert tracker.spent("search", "daily") == 0


async def test_a_failing_estimate_still_checks_the_budget() -> None:
    def broken(exchange: Exchange) -> Decimal:
        raise RuntimeError("price book exploded")

    tracker = BudgetTracker(
        [Limit("search", "daily", Decimal("0"), "block", Decimal(80))],
        FakeLedger(),
        clock=FakeClock(NOON),
    )
    stage = BudgetStage(tracker, broken)
    refused = await stage.on_request(call("search", 10))
    assert refused is not None and refused.status == 429


async def test_teams_without_a_budget_are_not_estimated() -> None:
    def never(exchange: Exchange) -> Decimal:
        raise AssertionError("estimated a call of a team without a budget")

    tracker = BudgetTracker([], FakeLedger(), clock=FakeClock(NOON))
    stage = BudgetStage(tracker, never)
    exchange = call("nobody", 10)
    assert await stage.on_request(exchange) is None
    stage.on_record(exchange, make_record(NOON, team="nobody", cost="1"))
    assert "budgets.reservation" not in exchange.extras


async def test_a_refusal_by_reservations_says_so() -> None:
    _, stage = setup("search")
    for _ in range(4):  # 4 x (0.45 + input) held, nothing spent
        assert await stage.on_request(call("search", EXPENSIVE_OUTPUT * 3)) is None
    refused = await stage.on_request(call("search", 1))
    assert refused is not None and refused.status == 429
    body = orjson.loads(bytes(refused.body))  # type: ignore[arg-type]
    assert "spend of 0 USD plus 1.80" in body["error"]["message"]
    assert "reserved by calls in flight" in body["error"]["message"]
