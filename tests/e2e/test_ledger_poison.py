"""Issue 10, through the whole product on both backends: each poison a hostile client or a
misbehaving upstream can send, followed by 100 normal calls -> 101 more records (the poison's
row bounded, or in the dead-letter store with its reason); the writer alive, nothing pending,
``/readyz`` ready, every JSON access-log line valid."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from sqlalchemy import func, select

from proxy.app import LEDGER_KEY, REGISTRY_KEY
from proxy.http.access_log import ACCESS_LOGGER
from proxy.observe.logs import JsonFormatter
from storage.engine import create_engine
from storage.schema import ledger_rejected, usage_records
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, share_encodings

KEY = "sk-test-poison"
NORMAL = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _shared_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


def _chat_reply(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-poison",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
    body.update(overrides)
    return orjson.dumps(body)


def _usage(tokens: object) -> bytes:
    text = _chat_reply(usage={"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})
    return text.replace(b'"prompt_tokens":7', b'"prompt_tokens":' + str(tokens).encode())


async def _raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One request written byte for byte (aiohttp's client would not send these bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    reply = await reader.read()
    writer.close()
    return reply


Poison = Callable[[Product, FakeUpstream, aiohttp.ClientSession], Awaitable[Any]]


async def _post(http: aiohttp.ClientSession, url: str, body: Any, **headers: str) -> int:
    async with http.post(
        url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}", **headers},
    ) as response:
        await response.read()
        return response.status


def _upstream_answers(body: bytes, **headers: str) -> Poison:
    async def poison(product: Product, up: FakeUpstream, http: aiohttp.ClientSession) -> Any:
        up.fail(200, body=body, headers=headers)
        return await _post(http, product.url, NORMAL)

    return poison


def _client_sends(body: Any, **headers: str) -> Poison:
    async def poison(product: Product, up: FakeUpstream, http: aiohttp.ClientSession) -> Any:
        return await _post(http, product.url, body, **headers)

    return poison


async def _percent_ff(product: Product, up: FakeUpstream, http: aiohttp.ClientSession) -> Any:
    return await _raw(product.server.port, b"GET /v1/%ff HTTP/1.1\r\nHost: x\r\n")


async def _non_utf8_header(product: Product, up: FakeUpstream, http: aiohttp.ClientSession) -> Any:
    body = orjson.dumps(NORMAL)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nOpenAI-Project: proj_\xff\xfe\x80\r\n"
    )
    return await _raw(product.server.port, head, body)


POISONS: dict[str, Poison] = {
    "user 256 chars": _client_sends({**NORMAL, "user": "u" * 256}),
    "OpenAI-Project 256 chars": _client_sends(NORMAL, **{"OpenAI-Project": "p" * 256}),
    "request model 300 chars": _client_sends({**NORMAL, "model": "m" * 300}),
    "response service_tier 33 chars": _upstream_answers(_chat_reply(service_tier="t" * 33)),
    "x-request-id 300 chars": _upstream_answers(_chat_reply(), **{"x-request-id": "r" * 300}),
    "usage 1e16": _upstream_answers(_usage(10**16)),
    "usage 1e17": _upstream_answers(_usage(10**17)),
    "usage 1e19": _upstream_answers(_usage(10**19)),
    "usage 1e30": _upstream_answers(_usage("1e30")),
    "path %ff without a key": _percent_ff,
    "non-UTF-8 OpenAI-Project": _non_utf8_header,
}


async def _counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(usage_records))).scalar()
            dead = (await conn.execute(select(func.count()).select_from(ledger_rejected))).scalar()
        return int(rows or 0), int(dead or 0)
    finally:
        await engine.dispose()


async def _wait_total(product: Product, url: str, total: int) -> tuple[int, int]:
    for _ in range(500):
        rows, dead = await _counts(url)
        if rows + dead >= total:
            return rows, dead
        await asyncio.sleep(0.02)
    raise AssertionError(f"{rows} rows + {dead} dead-lettered, wanted {total}")


async def test_each_poison_then_100_normal_calls_all_land(
    fake_upstream: FakeUpstream, tmp_path: Path, database_url: str
) -> None:
    log_lines = io.StringIO()
    handler = logging.StreamHandler(log_lines)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger(ACCESS_LOGGER)
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    product = Product(fake_upstream.url, tmp_path, database={"url": database_url})
    total = 0
    try:
        async with product, aiohttp.ClientSession() as http:
            for name, poison in POISONS.items():
                await poison(product, fake_upstream, http)
                statuses = await asyncio.gather(
                    *(_post(http, product.url, NORMAL) for _ in range(100))
                )
                assert statuses == [200] * 100, name
                total += 101
                rows, dead = await _wait_total(product, database_url, total)
                assert rows + dead == total, name
                writer = product.app[LEDGER_KEY].writer
                assert not writer.stalled(0.0) or writer._queue, name
                assert not writer._tasks[0].done(), f"writer died after {name}"
            async with http.get(product.url + "/readyz") as response:
                ready = await response.json()
            assert response.status == 200 and ready["checks"]["ledger"] is True, ready
            registry = product.app[REGISTRY_KEY]
            assert registry.get_sample_value("openai_meter_ledger_pending_records") == 0
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    rows, dead = await _counts(database_url)
    assert rows + dead == total == 101 * len(POISONS)
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    assert len(lines) == total
    assert any(line["path"].startswith("/v1/\ufffd") for line in lines)  # the %ff call's line
    assert not list((tmp_path / "spool").glob("ledger-*.jsonl"))


async def test_readyz_names_the_ledger_when_records_are_stuck_in_memory(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Database down *and* the spool refusing: records cannot leave memory -> not ready."""
    product = Product(
        fake_upstream.url, tmp_path, ledger={"stall_timeout_s": 0.2, "flush_interval_ms": 5}
    )
    async with product, aiohttp.ClientSession() as http:
        writer = product.app[LEDGER_KEY].writer

        async def database_down(batch: object) -> bool:
            return False

        def disk_full(records: object) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(writer, "_store", database_down)
        monkeypatch.setattr(writer._spool, "append", disk_full)
        assert await _post(http, product.url, NORMAL) == 200  # the client is served regardless
        await asyncio.sleep(0.4)
        async with http.get(product.url + "/readyz") as response:
            body = await response.json()
        assert response.status == 503 and body["checks"]["ledger"] is False, body
        monkeypatch.undo()  # the disk and the database are back: the record lands, ready again
        await asyncio.wait_for(writer.flush(), 10)
        async with http.get(product.url + "/readyz") as response:
            assert response.status == 200
    assert len(await product.rows()) == 1
