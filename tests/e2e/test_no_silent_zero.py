"""Issue 11, build point 3 through the whole product: never a silent $0 for a priced model.

One test per $0 case of the issue: a 200 chat completion (usage 12/5) labelled ``text/plain`` or
``application/octet-stream``; negative or string token counts; no response headers before the
read timeout; a client that left before the headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback import serve_on_loopback
from tests.support.product import Product, share_encodings

MODEL = "gpt-4o-mini-2024-07-18"
PROMPT = "Summarise the quarterly cost report for the search team in three short bullet points."
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


def _completion(usage: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-zero",
            "object": "chat.completion",
            "created": 1741570283,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Three bullets."},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )


async def _post(base_url: str, body: dict[str, Any] = REQUEST) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + "/chat/completions", json=body) as response,
    ):
        return response.status, await response.read()


def _priced(row: dict[str, Any]) -> None:
    assert row["cost_usd"] is not None and Decimal(row["cost_usd"]) > 0, row
    assert row["price_ref"]


@pytest.mark.parametrize("label", ["text/plain", "application/octet-stream"])
async def test_a_mislabelled_200_json_body_is_metered_as_reported(
    upstream: FakeUpstream, tmp_path: Path, label: str
) -> None:
    body = _completion({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
    upstream.fail(200, body=body, content_type=label)
    async with Product(upstream.url, tmp_path) as product:
        status, received = await _post(product.base_url)
    assert (status, received) == (200, body)  # the client gets exactly what upstream sent
    [row] = await product.rows()
    assert row["usage_source"] == "reported"
    assert (row["input_tokens"], row["output_tokens"]) == (12, 5)
    assert row["model"] == MODEL
    _priced(row)


async def test_a_mislabelled_stream_is_metered_and_still_stripped(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    content = {**chunk, "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    stream = b"data: " + orjson.dumps({**content, "usage": None}) + b"\n\n"
    stream += b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n"
    stream += b"data: [DONE]\n\n"
    upstream.fail(200, body=stream, content_type="text/plain")
    async with Product(upstream.url, tmp_path) as product:
        status, received = await _post(product.base_url, {**REQUEST, "stream": True})
    assert status == 200
    # what the client would have got without the proxy (it did not ask for usage)
    assert received == b"data: " + orjson.dumps(content) + b"\n\ndata: [DONE]\n\n"
    [row] = await product.rows()
    assert row["usage_source"] == "reported" and row["input_tokens"] == 12
    _priced(row)


@pytest.mark.parametrize("bad", [-1000, "1000"])
async def test_invalid_token_counts_are_estimated_never_zero_reported(
    upstream: FakeUpstream, tmp_path: Path, bad: Any
) -> None:
    upstream.fail(200, body=_completion({"prompt_tokens": bad, "completion_tokens": 5}))
    async with Product(upstream.url, tmp_path) as product:
        status, _ = await _post(product.base_url)
    assert status == 200
    [row] = await product.rows()
    assert row["usage_source"] == "estimated"
    assert row["estimate_reason"] == "invalid_usage"
    assert row["input_tokens"] > 10  # tiktoken's count of the prompt, not -1000 / 0
    _priced(row)


class _Silent:
    """An upstream that reads the request and never answers (no response headers)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> _Silent:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            self.arrived.set()
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self.url = f"http://127.0.0.1:{await serve_on_loopback(self._runner)}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_no_headers_before_the_read_timeout_is_billed_as_estimated(tmp_path: Path) -> None:
    async with (
        _Silent() as silent,
        Product(silent.url, tmp_path, upstream={"read_timeout_s": 0.3}) as product,
    ):
        status, body = await _post(product.base_url)
    assert status == 504 and b"error" in body
    [row] = await product.rows()
    assert row["outcome"] == "upstream_timeout"
    assert row["usage_source"] == "estimated"
    assert row["estimate_reason"] == "upstream_timeout"
    assert row["input_tokens"] > 10 and row["output_tokens"] == 0
    _priced(row)


async def test_a_client_gone_before_headers_is_billed_as_estimated(tmp_path: Path) -> None:
    async with _Silent() as silent, Product(silent.url, tmp_path) as product:
        post = asyncio.create_task(_post(product.base_url))
        await asyncio.wait_for(silent.arrived.wait(), 10)
        post.cancel()  # the client hangs up while upstream has the request
        with pytest.raises(asyncio.CancelledError):
            await post
        [row] = await product.wait_rows(1)
    assert row["outcome"] == "client_disconnect"
    assert row["usage_source"] == "estimated"
    assert row["estimate_reason"] == "client_disconnect"
    assert row["input_tokens"] > 10
    _priced(row)
