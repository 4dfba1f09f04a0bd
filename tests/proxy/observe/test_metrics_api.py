"""GET /metrics on the main app and on the optional separate port."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from proxy.observe.metrics import Metrics
from proxy.observe.metrics_api import (
    METRICS_ADDRESS_KEY,
    METRICS_KEY,
    REGISTRY_KEY,
    metrics_handler,
    metrics_server_ctx,
)
from tests.proxy.observe.test_metrics import record


def _app(registry: CollectorRegistry) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = Metrics(registry, models=["gpt-4o-mini"], teams=["search"])
    app.router.add_get("/metrics", metrics_handler)
    return app


async def test_metrics_endpoint_serves_the_injected_registry() -> None:
    registry = CollectorRegistry()
    app = _app(registry)
    app[METRICS_KEY].submit(record())
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert (
        'openai_meter_requests_total{endpoint="chat.completions",model="gpt-4o-mini",'
        'status_class="2xx",team="search"} 1.0' in text
    )
    # Nothing from prometheus_client's process-wide default registry leaks in.
    assert "python_gc_objects_collected_total" not in text


async def test_openmetrics_is_served_when_asked_for() -> None:
    async with TestClient(TestServer(_app(CollectorRegistry()))) as client:
        resp = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).rstrip().endswith("# EOF")


async def test_separate_metrics_port_lives_and_dies_with_the_app() -> None:
    registry = CollectorRegistry()
    app = _app(registry)
    app.cleanup_ctx.append(metrics_server_ctx(registry, "127.0.0.1", 0))
    async with TestClient(TestServer(app)):
        host, port = app[METRICS_ADDRESS_KEY]
        assert port != 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/metrics") as resp:
                assert resp.status == 200
                assert "openai_meter_requests_total" in await resp.text()
            async with session.get(f"http://{host}:{port}/v1/models") as resp:
                assert resp.status == 404  # the metrics port serves nothing else
    async with aiohttp.ClientSession() as session:
        try:
            await session.get(f"http://{host}:{port}/metrics")
        except aiohttp.ClientConnectionError:
            pass
        else:
            raise AssertionError("metrics server still listening after app cleanup")
