"""The dashboards and alert rules against a real Prometheus scraping the real proxy.

Traffic of every kind (streams, errors, an unpriced model, a call cut short and estimated, two teams
and an unknown key) flows through the proxy to the fake upstream; the ledger goes to PostgreSQL.
Then every PromQL expression in ``dashboards/`` is evaluated through Prometheus' HTTP API and must
return series with the labels its legend and grouping name; every SQL panel must return rows from
the same run's ledger; and the metric counters must equal the ledger's totals.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.book import PriceBook
from proxy.app import build_app
from proxy.observe.metrics import Metrics, MetricsStage, ReconcileMetrics
from proxy.observe.metrics_api import REGISTRY_KEY, metrics_handler
from proxy.observe.savings import record_savings
from proxy.teams.attribution import AttributionStage, TeamDirectory, key_fingerprint
from proxy.teams.budgets import BudgetStage, BudgetTracker, limits_from_settings
from proxy.usage.dedupe import MemoryDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from storage.engine import create_engine
from storage.migrate import upgrade
from storage.reports import spent_by_team
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.dashboards import (
    ALERTS_FILE,
    exposition_names,
    metric_names,
    prom_queries,
    sql_queries,
)
from tests.support.fake_upstream import FakeUpstream, FakeUsage
from tests.support.postgres import PostgresDatabases, postgres_databases
from tests.support.prometheus import PrometheusServer, prometheus_binary
from tests.support.proxy_server import ProxyServer, settings_for

pytestmark = [pytest.mark.prometheus, pytest.mark.postgres, pytest.mark.slow]

TEAMS = ("search", "ads")
KEYS = {"search": "sk-test-search-0001", "ads": "sk-test-ads-0002", None: "sk-test-nobody-0003"}
RATELIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-remaining-requests": "4990",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1999000",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-reset-tokens": "6m0s",
}


class RateLimitedUpstream(FakeUpstream):
    """The fake upstream, answering JSON calls with OpenAI's x-ratelimit-* headers as well."""

    def _json(self, request: web.Request, data: Any, request_id: str) -> web.Response:
        response = super()._json(request, data, request_id)
        response.headers.update(RATELIMIT_HEADERS)
        return response


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresDatabases]:
    with postgres_databases() as databases:
        yield databases


@dataclass
class Stack:
    proxy: ProxyServer
    upstream: RateLimitedUpstream
    prometheus: PrometheusServer
    engine: AsyncEngine
    writer: LedgerWriter
    meter: UsageMeter
    metrics: Metrics
    book: PriceBook


@pytest.fixture
async def stack(pg: PostgresDatabases, tmp_path: Path) -> AsyncIterator[Stack]:
    binary = prometheus_binary()  # skip / fail (CI) before building anything
    engine = create_engine(await asyncio.to_thread(pg.create))
    await upgrade(engine)
    registry = CollectorRegistry()
    book = PriceBook.load()
    metrics = Metrics(
        registry,
        models=book.models(),
        teams=TEAMS,
        usage_tier="tier1",
        canonical=book.canonical,
        savings=record_savings(book),
    )
    writer = LedgerWriter(
        engine, Spool(tmp_path / "spool"), registry=registry, flush_interval_ms=20
    )
    await writer.start()
    upstream = await RateLimitedUpstream().start()
    budget = {"daily_usd": "10", "monthly_usd": "200"}
    settings = settings_for(
        upstream.url,
        server={"shutdown_grace_s": 1.0},
        teams={team: {"keys": [key_fingerprint(KEYS[team])], "budget": budget} for team in TEAMS},
    )
    tracker = BudgetTracker(
        limits_from_settings(settings.teams),
        lambda teams, windows, until: spent_by_team(engine, teams, windows, until),
        timezone=settings.budgets.timezone,
        on_gauge=metrics.set_budget,
    )
    await tracker.refresh()
    # What the server's reconciliation (reconcile.interval) publishes after a run.
    ReconcileMetrics(registry).set("proj_live", Decimal("1.25"), Decimal("0.97"))
    meter = UsageMeter(
        pricer=book,
        sinks=[writer, metrics],
        encodings=Encodings(),
        dedupe=MemoryDedupe(),
        stages=[
            AttributionStage(TeamDirectory.from_settings(settings.teams)),
            BudgetStage(tracker),
            MetricsStage(metrics),
        ],
        on_error=metrics.on_error,
        # on_estimated stays None: Metrics counts estimates from the records themselves.
    )
    app = build_app(settings, hooks=meter, on_metering_error=metrics.on_error)
    if REGISTRY_KEY not in app:  # until build_app wires metrics itself
        app[REGISTRY_KEY] = registry
        app.router.add_get("/metrics", metrics_handler)
    proxy = await ProxyServer(settings, app=app).start()
    prometheus = PrometheusServer(binary, tmp_path)
    try:
        await asyncio.to_thread(
            prometheus.start, targets=[f"127.0.0.1:{proxy.port}"], rule_files=[ALERTS_FILE]
        )
        yield Stack(proxy, upstream, prometheus, engine, writer, meter, metrics, book)
    finally:
        await asyncio.to_thread(prometheus.stop)
        await proxy.stop()
        await upstream.stop()
        await writer.stop()
        await engine.dispose()


async def _traffic(stack: Stack, http: aiohttp.ClientSession) -> int:
    """Calls of every kind; returns how many calls were forwarded."""
    base = stack.proxy.base_url
    calls = 0

    async def call(team: str | None, path: str, body: dict[str, Any]) -> int:
        nonlocal calls
        calls += 1
        headers = {"Authorization": f"Bearer {KEYS[team]}"}
        async with http.post(f"{base}{path}", json=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        assert await call("search", "/chat/completions", chat) == 200
    # A call with cached input: a saving (savings_usd_total{kind="cached_input"}).
    stack.upstream.usage = replace(stack.upstream.usage, input_tokens=2000, cached_tokens=1024)
    assert await call("search", "/chat/completions", chat) == 200
    stack.upstream.usage = FakeUsage()
    for _ in range(2):
        assert await call("search", "/chat/completions", {**chat, "stream": True}) == 200
    assert await call("ads", "/responses", {"model": "gpt-4o-mini", "input": "hi"}) == 200
    assert await call("ads", "/responses", {"model": "gpt-4o-mini", "input": "hi", "stream": True})
    emb = {"model": "text-embedding-3-small", "input": "hi"}
    assert await call("ads", "/embeddings", emb) == 200
    assert await call(None, "/chat/completions", chat) == 200  # unknown key -> unassigned

    stack.upstream.fail(500)
    assert await call("search", "/chat/completions", chat) == 500
    stack.upstream.fail(429, headers={**RATELIMIT_HEADERS, "x-ratelimit-remaining-requests": "0"})
    assert await call("ads", "/chat/completions", chat) == 429

    # A model the catalog cannot price: recorded with cost NULL, counted as unpriced.
    stack.upstream.model = "mystery-model-9000"
    assert await call("ads", "/chat/completions", {**chat, "model": "mystery-model-9000"}) == 200
    stack.upstream.model = "gpt-4o-mini-2024-07-18"

    # A stream the client abandons after the first event: usage estimated with tiktoken.
    stack.upstream.hold = asyncio.Event()
    calls += 1
    headers = {"Authorization": f"Bearer {KEYS['search']}"}
    resp = await http.post(
        f"{base}/chat/completions", json={**chat, "stream": True}, headers=headers
    )
    await resp.content.readany()
    resp.close()
    await asyncio.wait_for(stack.upstream.stream_cancelled.wait(), 10)
    stack.upstream.hold.set()
    stack.upstream.hold = None
    return calls


async def _ledger_rows(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(sql)
        return [dict(row._mapping) for row in result]


async def _wait_ledger(engine: AsyncEngine, count: int) -> None:
    for _ in range(200):
        rows = await _ledger_rows(engine, "SELECT count(*) AS n FROM usage_records")
        if rows[0]["n"] >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"ledger has {rows[0]['n']} records, expected {count}")


def _series_value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


async def test_dashboards_and_alerts_against_real_prometheus_and_ledger(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        calls = await _traffic(stack, http)
        await stack.meter.drain()
        await _wait_ledger(stack.engine, calls)
        await stack.writer.flush()

        prom = stack.prometheus
        await prom.wait_for(
            http,
            "sum(openai_meter_requests_total)",
            lambda r: bool(r) and _series_value(r[0]) == calls,
        )
        await prom.wait_for(
            http,
            "sum(openai_meter_ledger_written_records_total)",
            lambda r: bool(r) and _series_value(r[0]) >= calls,
        )
        await prom.wait_for(http, "openai_meter_budget_limit_usd", bool)
        # rate()/increase() need two samples of a series inside their window.
        await asyncio.sleep(2.5)

        # 1. Every metric a dashboard or rule names is in the proxy's own exposition.
        async with http.get(f"{stack.proxy.url}/metrics") as resp:
            exported = exposition_names(await resp.text())
        queries = prom_queries()
        unknown = {
            (q.where, name) for q in queries for name in metric_names(q.evaluable) - exported
        }
        assert not unknown, f"dashboards use metrics the proxy does not export: {sorted(unknown)}"

        # 2. Every expression returns series carrying the labels its legend / grouping names.
        allowed = {
            "team": {*TEAMS, "unassigned"},
            "model": {*stack.book.models(), "other"},
        }
        problems: list[str] = []
        for query in queries:
            result = await prom.query(http, query.evaluable)
            if not result:
                problems.append(f"{query.where}: no series for {query.evaluable}")
                continue
            for series in result:
                labels = set(series["metric"]) - {"__name__"}
                if not query.legend_labels <= labels:
                    problems.append(
                        f"{query.where}: legend needs {query.legend_labels}, got {labels}"
                    )
                grouping = query.grouping_labels
                if grouping is not None and labels != grouping:
                    problems.append(f"{query.where}: grouped by {grouping}, got {labels}")
                for name, values in allowed.items():
                    if name in series["metric"] and series["metric"][name] not in values:
                        problems.append(f"{query.where}: unbounded {name}={series['metric'][name]}")
        assert not problems, "\n".join(problems)

        # 3. The alert rules loaded and evaluate cleanly.
        rules = await prom.api(http, "rules")
        loaded = [r for g in rules["groups"] for r in g["rules"]]
        assert len(loaded) == sum(1 for q in queries if q.where.startswith("alerts.yml"))
        assert all(r["health"] == "ok" for r in loaded), loaded

        # 4. Counters equal the ledger's totals for the same traffic.
        await _assert_counters_match_ledger(stack, http)

    # 5. Every SQL panel returns rows from this run's ledger.
    now = datetime.now(UTC)
    start = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    teams = [
        r["team"]
        for r in await _ledger_rows(stack.engine, "SELECT DISTINCT team FROM usage_records")
    ]
    for query in sql_queries():
        rows = await _ledger_rows(stack.engine, query.evaluable(start, end, teams))
        assert rows, f"{query.where}: no rows"
        if query.fmt == "time_series":
            assert {"time", "value"} <= set(rows[0]), f"{query.where}: {list(rows[0])}"


async def _assert_counters_match_ledger(stack: Stack, http: aiohttp.ClientSession) -> None:
    prom = stack.prometheus

    async def by(expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): _series_value(s) for s in await prom.query(http, expr)}

    ledger_requests = {
        r["team"]: r["n"]
        for r in await _ledger_rows(
            stack.engine, "SELECT team, count(*) AS n FROM usage_records GROUP BY team"
        )
    }
    assert await by("sum by (team) (openai_meter_requests_total)", "team") == ledger_requests

    totals = (
        await _ledger_rows(
            stack.engine,
            "SELECT SUM(input_tokens) AS input, SUM(output_tokens) AS output,"
            " SUM(cached_input_tokens) AS cached_input, SUM(reasoning_tokens) AS reasoning,"
            " SUM(cost_usd) AS cost,"
            " count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,"
            " count(*) FILTER (WHERE usage_source = 'estimated') AS estimated"
            " FROM usage_records",
        )
    )[0]
    tokens = await by("sum by (type) (openai_meter_tokens_total)", "type")
    for kind in ("input", "output", "cached_input", "reasoning"):
        assert tokens.get(kind, 0.0) == totals[kind], kind
    assert totals["input"] > 0 and totals["output"] > 0

    cost = await prom.query(http, "sum(openai_meter_cost_usd_total)")
    assert math.isclose(_series_value(cost[0]), float(totals["cost"]), rel_tol=1e-9)
    assert totals["cost"] > 0

    # Budget gauges (published by the budget stage) equal each budgeted team's ledger spend.
    spent = {
        r["team"]: r["spent"]
        for r in await _ledger_rows(
            stack.engine,
            "SELECT team, COALESCE(SUM(cost_usd), 0) AS spent FROM usage_records GROUP BY team",
        )
    }
    gauges = await by('openai_meter_budget_spent_usd{period="daily"}', "team")
    assert set(gauges) == set(TEAMS)
    for team in TEAMS:
        assert math.isclose(gauges[team], float(spent[team]), rel_tol=1e-9), team
    assert await by('openai_meter_budget_limit_usd{period="monthly"}', "team") == dict.fromkeys(
        TEAMS, 200.0
    )

    unpriced = await prom.query(http, "sum(openai_meter_unpriced_requests_total)")
    assert _series_value(unpriced[0]) == totals["unpriced"] == 1
    estimated = await prom.query(http, "sum(openai_meter_estimated_usage_total)")
    assert _series_value(estimated[0]) == totals["estimated"] >= 1
