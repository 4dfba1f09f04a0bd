"""Budget admission latency: what a budgeted call adds on the request path (issue 15).

    python -m bench.budget_bench            # 3000 calls per case, one after another
    python -m bench.budget_bench --calls 10000

Cases, each the time of ``BudgetStage.on_request`` (reservation from the request + admission):
``no_budget`` (a team without a budget: one dict look-up), ``memory`` (SQLite / one process:
reservations in memory) and ``shared_pg`` (one statement on the team's shared row in PostgreSQL);
``shared_pg_settle`` is the settle statement (run after the call, off the request path).
PostgreSQL: ``OPENAI_METER_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test);
a throw-away database is created and dropped. Skipped (figures absent) when unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from multidict import CIMultiDict

from bench.ledger_bench import PG_URL, _admin, _with_pg_db
from pricing.book import PriceBook
from proxy.http.exchange import Attribution, Exchange
from proxy.teams.budgets import BudgetStage, BudgetTracker, Limit, Reservation
from proxy.usage.ceiling import CostCeiling
from storage.budget_counters import SharedReservations, Window
from storage.engine import create_engine
from storage.migrate import upgrade

BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]}
)
LIMIT = Limit("search", "daily", Decimal("1000000"), "block", Decimal(80))


def _exchange(team: str) -> Exchange:
    exchange = Exchange(
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        endpoint="chat.completions",
        request_headers=CIMultiDict({"Content-Type": "application/json"}),
        content_type="application/json",
        request_body=BODY,
        request_json=orjson.loads(BODY),
        model_requested="gpt-4o-mini",
    )
    exchange.attribution = Attribution(team=team)
    return exchange


def _ms(samples: list[float], prefix: str) -> dict[str, float]:
    samples.sort()
    return {
        f"{prefix}_p50_ms": statistics.median(samples) * 1000,
        f"{prefix}_p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000,
    }


async def _stage_case(
    stage: BudgetStage, tracker: BudgetTracker, team: str, calls: int
) -> list[float]:
    samples = []
    for _ in range(calls):
        exchange = _exchange(team)
        began = time.perf_counter()
        refused = await stage.on_request(exchange)
        samples.append(time.perf_counter() - began)
        assert refused is None
        held = exchange.extras.pop("budgets.reservation", None)
        if isinstance(held, Reservation):
            tracker.release(held)  # the settle statement is measured separately
    return samples


async def _empty_ledger(teams: object, windows: object, until: object) -> dict[str, object]:
    return {}


async def _main(calls: int) -> dict[str, float]:
    ceiling = CostCeiling(PriceBook.load())
    out: dict[str, float] = {}
    tracker = BudgetTracker([LIMIT], _empty_ledger)  # type: ignore[arg-type]
    stage = BudgetStage(tracker, ceiling)
    out.update(_ms(await _stage_case(stage, tracker, "nobody", calls), "no_budget"))
    out.update(_ms(await _stage_case(stage, tracker, "search", calls), "memory"))

    name = f"om_bench_{secrets.token_hex(4)}"
    url = await _with_pg_db(name)
    if url is None:
        return out
    try:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        store = await SharedReservations.connect(url)
        shared = BudgetTracker([LIMIT], _empty_ledger, shared=store)  # type: ignore[arg-type]
        shared_stage = BudgetStage(shared, ceiling)
        await _stage_case(
            shared_stage, shared, "search", 50
        )  # warm: pool, prepared statements, the row
        out.update(_ms(await _stage_case(shared_stage, shared, "search", calls), "shared_pg"))
        now = datetime.now(UTC)
        windows = {
            "daily": Window(now - timedelta(hours=1), now + timedelta(hours=1), LIMIT.amount)
        }
        settles = []
        for i in range(calls):
            began = time.perf_counter()
            await store.settle("search", f"bench-{i}", windows, Decimal("0.0001"))
            settles.append(time.perf_counter() - began)
        out.update(_ms(settles, "shared_pg_settle"))
        await store.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def run(calls: int = 3000) -> dict[str, float]:
    return asyncio.run(_main(calls))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    print(f"PostgreSQL: {PG_URL}; load {os.getloadavg()[0]:.2f}")
    for key, value in run(args.calls).items():
        print(f"{key:28s} {value:9.3f}")
