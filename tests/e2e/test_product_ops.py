"""Operating the product: ``openai-meter serve`` as a real process (SIGTERM loses nothing, bad
config exits 2 with one line), and a ledger outage mid-traffic (client first, records land once)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from sqlalchemy.engine import make_url

from tests.support.fake_upstream import FakeUpstream, FakeUsage
from tests.support.product import Product, ledger_rows, share_encodings
from tests.support.serve_process import free_port, serve, wait_healthy
from tests.support.tcp_relay import TcpRelay

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]

# -- 10. serve as a subprocess --------------------------------------------------------------------


async def test_serve_subprocess_sigterm_exits_0_and_every_record_is_in_the_database(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    port = free_port()
    database_url = f"sqlite:///{tmp_path}/ledger.db"
    config = tmp_path / "meter.yaml"
    config.write_text(
        f"ledger: {{spool_dir: {tmp_path}/spool, flush_interval_ms: 5000}}\n"
        "server: {shutdown_grace_s: 10}\n"
    )
    process = await serve(
        tmp_path,
        "--config",
        str(config),
        "--port",
        str(port),
        "--upstream",
        fake_upstream.url,
        "--database-url",
        database_url,
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", process)
        client = openai.AsyncOpenAI(
            api_key="sk-test-serve", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        )
        try:
            ids: list[str] = []
            for _ in range(3):
                reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                ids.append(reply.id)
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True
                )
                async for chunk in stream:
                    last_id = chunk.id
                ids.append(last_id)
                ids.append((await client.responses.create(model="gpt-4o-mini", input="hi")).id)
        finally:
            await client.close()
        # The ledger flushes every 5 s: the records are still queued when SIGTERM arrives.
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    rows = await ledger_rows(database_url)
    assert sorted(r["response_id"] for r in rows) == sorted(ids)
    assert all(r["usage_source"] == "reported" and r["cost_usd"] > 0 for r in rows)
    assert not [p for p in (tmp_path / "spool").rglob("*.jsonl") if p.stat().st_size]


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ("ledger: {spool_dri: ./spool}\n", "spool_dri"),  # a typo in a key
        ("virtual_keys: {enabled: true}\n", "upstream.api_key"),  # caught while wiring the app
    ],
)
async def test_serve_with_a_bad_config_exits_2_with_one_line(
    tmp_path: Path, config: str, names: str
) -> None:
    path = tmp_path / "meter.yaml"
    path.write_text(config)
    process = await serve(tmp_path, "--config", str(path), "--port", str(free_port()))
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert names in lines[0]


# -- 12. ledger outage mid-traffic ------------------------------------------------------------------


@pytest.mark.postgres
async def test_ledger_outage_calls_succeed_and_records_land_once_after_recovery(
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    share_encodings(monkeypatch)
    url = make_url(postgres_url)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432)
    await relay.start()
    via_relay = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    fake_upstream.usage = FakeUsage(input_tokens=100, output_tokens=30)
    try:
        async with Product(fake_upstream.url, tmp_path, database={"url": via_relay}) as product:
            client = product.sdk()

            async def calls(n: int) -> list[str]:
                ids = []
                for _ in range(n):
                    reply = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=MESSAGES
                    )
                    ids.append(reply.id)
                    stream = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=MESSAGES, stream=True
                    )
                    ids.extend({chunk.id async for chunk in stream})
                    response = await client.responses.create(model="gpt-4o-mini", input="hi")
                    ids.append(response.id)
                return ids

            ids = await calls(2)
            await product.wait_rows(len(ids))
            relay.cut()  # the database goes away mid-traffic...
            ids += await calls(4)  # ...and every call still succeeds
            await asyncio.sleep(0.3)  # several flush intervals: the writer meets the outage
            async with aiohttp.ClientSession() as http, http.get(product.url + "/metrics") as r:
                metrics = await r.text()
            assert _sample(metrics, "openai_meter_ledger_spooled_records_total") > 0
            relay.restore()
            await product.wait_rows(len(ids), deadline_s=30)  # replayed after recovery
    finally:
        await relay.stop()
    rows = await ledger_rows(postgres_url)
    assert len(rows) == len(ids) == 18  # exactly once: no loss, no duplicate
    assert sorted(r["response_id"] for r in rows) == sorted(ids)
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in rows)


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_ready_means_metering_is_installed(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share_encodings(monkeypatch)
    async with (
        Product(fake_upstream.url, tmp_path) as product,
        aiohttp.ClientSession() as http,
        http.get(product.url + "/readyz") as r,
    ):
        assert r.status == 200
        assert (await r.json())["checks"] == {
            "upstream_session": True,
            "metering": True,
            "ledger": True,
        }
