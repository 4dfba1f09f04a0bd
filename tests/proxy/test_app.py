"""App wiring a user notices: health/readiness, admin token on /meter/*, no upstream for own paths."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import proxy.app
from proxy.app import READINESS_KEY, build_app
from proxy.usage.encodings import BUNDLED, Encodings
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product
from tests.support.proxy_server import ProxyServer, settings_for


async def _secret(request: web.Request) -> web.Response:
    return web.json_response({"secret": True})


async def test_admin_routes_need_the_token_and_cannot_be_reached_around_it(
    fake_upstream: FakeUpstream,
) -> None:
    settings = settings_for(fake_upstream.url, admin={"token": "t0ken"})
    app = build_app(settings)
    app.router.add_get("/meter/secret", _secret)
    async with ProxyServer(settings, app=app) as proxy, aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/meter/secret") as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_admin_token"
        async with client.get(
            proxy.url + "/meter/secret", headers={"Authorization": "Bearer nope"}
        ) as r:
            assert r.status == 401
        async with client.get(
            proxy.url + "/meter/secret", headers={"Authorization": "Bearer t0ken"}
        ) as r:
            assert r.status == 200 and (await r.json()) == {"secret": True}
        # The /v1 route never reaches /meter, token or not.
        async with client.get(URL(proxy.url + "/v1/%2e%2e/meter/secret", encoded=True)) as r:
            assert r.status == 404
        # Forwarded calls do not need the admin token.
        async with client.get(proxy.base_url + "/models") as r:
            assert r.status == 200
    assert [r.path for r in fake_upstream.requests] == ["/v1/models"]


async def test_healthz_and_readyz_with_registered_checks(fake_upstream: FakeUpstream) -> None:
    settings = settings_for(fake_upstream.url)
    app = build_app(settings)
    ledger_ok = {"value": True}
    app[READINESS_KEY].add("ledger", lambda: ledger_ok["value"])
    async with ProxyServer(settings, app=app) as proxy, aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/healthz") as r:
            assert r.status == 200
        async with client.get(proxy.url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {"upstream_session": True, "ledger": True}
        ledger_ok["value"] = False
        async with client.get(proxy.url + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["ledger"] is False
        async with client.get(proxy.url + "/healthz") as r:
            assert r.status == 200


async def test_encodings_are_built_at_start_only_with_preload_encodings(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: an idle proxy does not hold the ~105 MiB of tiktoken encodings by default."""
    built: list[str] = []
    all_built = threading.Event()

    def fake_encoding(name: str) -> Any:  # stands in for the real (slow) build
        built.append(name)
        if len(built) == len(BUNDLED):
            all_built.set()
        return object()

    monkeypatch.setattr(proxy.app, "Encodings", lambda: Encodings(loader=fake_encoding))
    async with Product(fake_upstream.url, tmp_path / "lazy") as product:
        await product.sdk().models.list()
        assert built == []
    async with Product(fake_upstream.url, tmp_path / "eager", metering={"preload_encodings": True}):
        assert await asyncio.to_thread(all_built.wait, 10.0)  # a deadline, not a timing
    assert sorted(built) == sorted(BUNDLED)


async def test_start_up_objects_are_frozen_while_serving_and_unfrozen_after(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Issue 16: a full GC does not walk start-up objects on the event loop (tail latency)."""
    import gc

    assert gc.get_freeze_count() == 0
    async with Product(fake_upstream.url, tmp_path) as product:
        await product.sdk().models.list()
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
