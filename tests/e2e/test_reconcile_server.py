"""Reconciliation inside the server (``reconcile.interval``): a run after traffic is stored in the
``reconciliation`` table, served by ``GET /meter/reconcile`` behind the admin token, and exported
as ``openai_meter_reconcile_*{project}`` gauges; the admin key never reaches the page or metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.app import RECONCILER_KEY, StartupError, create_app
from proxy.teams.attribution import key_fingerprint
from tests.support.fake_admin_api import Billed, FakeAdminApi
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, product_settings, share_encodings

ADMIN_KEY = "sk-admin-" + "Z9" * 24
TOKEN = "admin-t0ken"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)
    monkeypatch.setenv("OPENAI_ADMIN_KEY", ADMIN_KEY)


@pytest.fixture
async def world() -> AsyncIterator[tuple[FakeUpstream, FakeAdminApi]]:
    admin = FakeAdminApi(admin_key=ADMIN_KEY)
    upstream = FakeUpstream()
    upstream.extra_routes.append(admin.add_routes)
    async with upstream:
        yield upstream, admin


async def test_scheduled_run_is_stored_served_and_exported(
    world: tuple[FakeUpstream, FakeAdminApi], tmp_path: Path
) -> None:
    upstream, admin = world
    sections: dict[str, Any] = {
        "reconcile": {"interval": "1d", "restate_days": 0},
        "admin": {"token": TOKEN},
    }
    async with Product(upstream.url, tmp_path, **sections) as product:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        client = product.sdk("sk-proj-client", project="proj_main")
        for _ in range(2):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await product.wait_rows(2)
        for _ in range(2):  # what OpenAI billed for them (its published price), plus 1 around it
            admin.calls.append(
                Billed(
                    at=datetime.now(UTC),
                    project_id="proj_main",
                    model="gpt-4o-mini-2024-07-18",
                    cost=Decimal("0.0000048"),
                    counts={"input_tokens": 12, "output_tokens": 5},
                )
            )
        admin.calls.append(
            Billed(
                at=datetime.now(UTC),
                project_id="proj_other",
                model="gpt-4o",
                cost=Decimal("2.5"),
                requests=3,
                counts={"input_tokens": 100, "output_tokens": 10},
            )
        )
        rec = await product.app[RECONCILER_KEY].run_once()
        assert rec.ok is False  # proj_other went around the proxy

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{product.url}/meter/reconcile") as resp:
                assert resp.status == 401
            async with http.get(f"{product.url}/meter/reconcile?x=1", headers=headers) as resp:
                assert resp.status == 400
            async with http.get(f"{product.url}/meter/reconcile", headers=headers) as resp:
                assert resp.status == 200
                body = await resp.json()
                text = await resp.text()
            async with http.get(f"{product.url}/metrics") as resp:
                metrics = await resp.text()

    assert body["ok"] is False and body["admin_key"] == key_fingerprint(ADMIN_KEY)
    cost = {row["project"]: row for row in body["cost"]}
    assert cost["proj_main"]["captured_ratio"] == "1.0000"
    assert cost["proj_other"]["captured_ratio"] == "0.0000"
    assert 'openai_meter_reconcile_captured_ratio{project="proj_main"} 1.0' in metrics
    assert 'openai_meter_reconcile_captured_ratio{project="proj_other"} 0.0' in metrics
    assert 'openai_meter_reconcile_billed_usd{project="proj_other"} 2.5' in metrics
    assert ADMIN_KEY not in text + metrics


async def test_no_run_yet_is_a_404_that_says_how(tmp_path: Path) -> None:
    async with (
        FakeUpstream() as upstream,
        Product(upstream.url, tmp_path) as product,
        aiohttp.ClientSession() as http,
        http.get(f"{product.url}/meter/reconcile") as resp,
    ):
        assert resp.status == 404
        assert "reconcile.interval" in (await resp.json())["error"]["message"]


def test_an_interval_without_an_admin_key_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_ADMIN_KEY")
    settings = product_settings("http://127.0.0.1:9", tmp_path, reconcile={"interval": "6h"})
    with pytest.raises(StartupError, match="OPENAI_ADMIN_KEY"):
        create_app(settings)


@pytest.mark.parametrize("interval", ["0h", "6x", "h", "-1d", "1.5h", ""])
def test_a_bad_interval_is_a_config_error(tmp_path: Path, interval: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        product_settings("http://127.0.0.1:9", tmp_path, reconcile={"interval": interval})


async def test_a_failed_run_is_logged_without_the_key_and_traffic_goes_on(
    world: tuple[FakeUpstream, FakeAdminApi], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import logging

    upstream, admin = world
    admin.fail(401, f"Incorrect API key provided: {ADMIN_KEY}.")
    caplog.set_level(logging.WARNING, logger="openai_meter.reconcile")
    async with Product(upstream.url, tmp_path, reconcile={"interval": "1h"}) as product:
        reconciler = product.app[RECONCILER_KEY]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while reconciler.failures == 0:  # the first run starts with the server
            assert loop.time() < deadline, "the scheduled run never finished"
            await asyncio.sleep(0.02)
        client = product.sdk("sk-proj-client")
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "reconciliation failed" in logged and "HTTP 401" in logged
    assert ADMIN_KEY not in logged and key_fingerprint(ADMIN_KEY) in logged
