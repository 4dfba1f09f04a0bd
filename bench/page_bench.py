"""Spend page benchmark: ``GET /meter/`` over 90 days x 20 teams x 10 models (SQLite ledger).

    python -m bench.page_bench                  # 90 d x 20 teams x 10 models x 3 calls = 54,000 rows
    python -m bench.page_bench --calls 10       # 180,000 rows
    python -m bench.page_bench --runs 7

Every (day, team, model) gets ``--calls`` calls with varied token counts, a third of them with
cached input, some on the batch and flex tiers, priced by the real price book. The page is asked for
the whole 90-day window (spend per day and team, top models, per-team table with budgets, what-if
for model=gpt-4.1-nano / tier=batch / tier=flex, savings, price list) through the real aiohttp
app on loopback; the figure is the median wall time of the full response (query + render).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
from aiohttp import web

from pricing.book import PriceBook
from pricing.usage import Usage
from proxy.admin.admin_api import ADMIN_CLOCK_KEY, add_admin_routes
from proxy.admin.page.data import BudgetView
from proxy.admin.page.views import add_page_routes
from proxy.admin.prices_api import PRICEBOOK_KEY
from proxy.teams.budgets import Limit
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.record import UsageRecord

DAYS = 90
TEAMS = 20
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
)
START = datetime(2026, 8, 1, tzinfo=UTC)
NOW = START + timedelta(days=DAYS)


def records(book: PriceBook, calls: int) -> list[UsageRecord]:
    out: list[UsageRecord] = []
    n = 0
    for day in range(DAYS):
        for team in range(TEAMS):
            for index, model in enumerate(MODELS):
                for call in range(calls):
                    n += 1
                    started = START + timedelta(
                        days=day, seconds=(team * 997 + index * 89 + call * 7)
                    )
                    tier = ("default", "default", "batch", "flex", "default")[n % 5]
                    endpoint = "chat.completions" if n % 3 else "responses"
                    inputs = 500 + (n * 37) % 20_000
                    cached = (inputs // 2) if n % 3 == 0 else 0
                    outputs = 50 + (n * 13) % 2_000
                    usage = Usage(
                        input_tokens=inputs, cached_input_tokens=cached, output_tokens=outputs
                    )
                    cost = book.price(usage, model, tier, started)
                    out.append(
                        UsageRecord(
                            id=f"page-{n:09d}",
                            started_at=started,
                            finished_at=started + timedelta(seconds=1),
                            method="POST",
                            path=f"/v1/{endpoint.replace('.', '/')}",
                            endpoint=endpoint,
                            status_code=200,
                            outcome="ok",
                            model=model,
                            model_requested=model,
                            service_tier=tier,
                            team=f"team-{team:02d}",
                            input_tokens=inputs,
                            cached_input_tokens=cached,
                            output_tokens=outputs,
                            usage_source="reported",
                            cost_usd=cost.total,
                            price_ref=cost.price_ref,
                            unpriced_reason=cost.unpriced_reason,
                        )
                    )
    return out


async def _main(calls: int, runs: int) -> dict[str, float]:
    book = PriceBook.load()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'page.db'}")
        await upgrade(engine)
        rows = records(book, calls)
        for start in range(0, len(rows), 5000):
            await write_batch(engine, rows[start : start + 5000])
        app = web.Application()
        app[PRICEBOOK_KEY] = book
        add_admin_routes(app, engine)
        app[ADMIN_CLOCK_KEY] = lambda: NOW
        limits = tuple(
            Limit(f"team-{t:02d}", "monthly", Decimal(50), "block", Decimal(80))
            for t in range(TEAMS)
        )
        add_page_routes(app, None, BudgetView(limits, "UTC"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/meter/?since={START.date()}&until={NOW.date()}"
        timings: list[float] = []
        size = 0
        try:
            async with aiohttp.ClientSession() as client:
                for _ in range(runs + 1):  # the first warms caches (catalog quotes, templates)
                    began = time.perf_counter()
                    async with client.get(url) as response:
                        body = await response.read()
                        assert response.status == 200, body[:500]
                    timings.append(time.perf_counter() - began)
                    size = len(body)
        finally:
            await runner.cleanup()
            await engine.dispose()
    return {
        "page_rows": float(len(rows)),
        "page_first_s": timings[0],
        "page_median_s": statistics.median(timings[1:]),
        "page_min_s": min(timings[1:]),
        "page_bytes": float(size),
    }


def run(calls: int = 3, runs: int = 5) -> dict[str, float]:
    return asyncio.run(_main(calls, runs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3, help="calls per (day, team, model)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for key, value in run(args.calls, args.runs).items():
        print(f"{key:24s} {value:14.3f}")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
