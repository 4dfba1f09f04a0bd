"""Budget alerts on the request path: what ``BudgetNotifier.on_state`` costs per call.

The tracker calls it once per budgeted period (daily and/or monthly) for every finished call of a
budgeted team. ``run()`` returns microseconds per ``on_state`` (lower is better): the steady state
(nothing due, or the alert already queued) and the one-off queueing of an alert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from proxy.teams.notify import BudgetNotifier, Webhook
from storage.budget_notifications import NotificationKey, Numbers, StaleClaim, State

_N = 200_000
_DAY = datetime(2026, 11, 17, tzinfo=UTC)
_LIMIT = Decimal(10)
_WARN = Decimal(80)


class _NoStore:
    async def claim(
        self, key: NotificationKey, *, numbers: Numbers | None = None, implies: Sequence[str] = ()
    ) -> bool:
        return False

    async def claim_reset(
        self, key: NotificationKey, previous_start: datetime, *, numbers: Numbers | None = None
    ) -> bool:
        return False

    async def finish(self, key: NotificationKey, state: State) -> None:
        return None

    async def stale_claims(self, older_than_s: float, limit: int = 100) -> list[StaleClaim]:
        return []

    async def reclaim(self, claim: StaleClaim) -> bool:
        return False


def _per_call_us(call: Callable[[int], None], n: int = _N) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for i in range(n):
            call(i)
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


async def _measure() -> dict[str, float]:
    notifier = BudgetNotifier([Webhook(url="http://127.0.0.1:9/hook")], _NoStore())
    low, high = Decimal("1.2345678901"), Decimal("9.5")
    notifier.on_state("search", "daily", _DAY, low, _LIMIT, _WARN)
    quiet = _per_call_us(lambda _: notifier.on_state("search", "daily", _DAY, low, _LIMIT, _WARN))
    notifier.on_state("search", "daily", _DAY, high, _LIMIT, _WARN)
    queued = _per_call_us(lambda _: notifier.on_state("search", "daily", _DAY, high, _LIMIT, _WARN))
    # A new team each call: every call is a first crossing (3 rounds of fresh teams, best kept).
    fresh = BudgetNotifier(
        [Webhook(url="http://127.0.0.1:9/hook")], _NoStore(), queue_size=_N * 3 * 2
    )
    rounds = [[f"r{r}team{i}" for i in range(_N)] for r in range(3)]
    firsts = []
    for teams in rounds:
        started = time.perf_counter()
        for team in teams:
            fresh.on_state(team, "daily", _DAY, high, _LIMIT, _WARN)
        firsts.append((time.perf_counter() - started) / _N * 1e6)
    return {
        "on_state us, nothing due": quiet,
        "on_state us, alert already queued": queued,
        "on_state us, first crossing (queues reset check + warn)": min(firsts),
    }


def run() -> dict[str, float]:
    return asyncio.run(_measure())


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:56s} {value:10.3f}")
