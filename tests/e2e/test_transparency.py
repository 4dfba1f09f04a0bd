"""Issue 12 (transparency): the client sees what it would see without the proxy, byte for byte.

* A chat / legacy completions stream whose client did not ask for usage: the proxy injects
  ``include_usage`` upstream, and the client still gets the direct call's exact bytes (no usage-only
  chunk, no ``"usage":null`` in every chunk). A client that asked for usage gets the upstream's
  bytes untouched. Both with the upstream's bytes split at arbitrary positions.
* A non-streamed JSON response the meter reads whole anyway goes out with its ``Content-Length``
  (not chunked), also when upstream compressed it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, share_encodings

CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
LEGACY = {"model": "gpt-3.5-turbo-instruct", "stream": True, "prompt": "Say hi"}


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        up.fixed_ids = True
        yield up


async def _raw(url: str, path: str, body: dict[str, Any]) -> tuple[bytes, aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession(auto_decompress=True) as session,
        session.post(url + path, json=body, headers={"Authorization": "Bearer sk-test"}) as r,
    ):
        return await r.read(), r


async def _direct_and_proxied(
    upstream: FakeUpstream, product: Product, path: str, body: dict[str, Any]
) -> tuple[bytes, bytes]:
    direct, _ = await _raw(upstream.url + "/v1", path, body)
    via, _ = await _raw(product.base_url, path, body)
    return direct, via


async def _scenario(offsets: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeUpstream() as up:
            up.fixed_ids = True
            up.stream_events = 6
            up.sse_split = offsets
            async with Product(up.url, Path(tmp)) as product:
                # the client did not ask for usage: injected upstream, invisible to the client
                direct, via = await _direct_and_proxied(up, product, "/chat/completions", CHAT)
                assert up.requests[-1].json["stream_options"] == {"include_usage": True}
                assert b'"usage"' not in direct
                assert via == direct
                # the client asked for usage: the upstream's bytes, untouched
                asked = {**CHAT, "stream_options": {"include_usage": True}}
                direct, via = await _direct_and_proxied(up, product, "/chat/completions", asked)
                assert b'"usage":null' in direct and b'"choices":[]' in direct
                assert via == direct
            rows = await product.rows()
        assert len(rows) == 2 and all(r["usage_source"] == "reported" for r in rows)


# Each example starts an app (~0.3 s): no shrinking phase, so a failure reports in seconds.
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(offsets=st.lists(st.integers(min_value=0, max_value=3000), max_size=16))
def test_streams_are_byte_exact_whatever_the_split(offsets: list[int]) -> None:
    asyncio.run(_scenario(offsets))


async def test_every_byte_split_stream_is_byte_exact(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.stream_events = 2
    upstream.sse_split = list(range(1, 2000))  # one byte per write
    async with Product(upstream.url, tmp_path) as product:
        direct, via = await _direct_and_proxied(upstream, product, "/chat/completions", CHAT)
    assert via == direct and direct.endswith(b"data: [DONE]\n\n")


async def test_legacy_completions_stream_is_byte_exact(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with Product(upstream.url, tmp_path) as product:
        direct, via = await _direct_and_proxied(upstream, product, "/completions", LEGACY)
    assert via == direct


@pytest.mark.parametrize("gzip", [False, True])
async def test_a_json_response_keeps_its_content_length(
    upstream: FakeUpstream, tmp_path: Path, gzip: bool
) -> None:
    upstream.gzip = gzip
    body = {**CHAT, "stream": False}
    async with Product(upstream.url, tmp_path) as product:
        direct, _ = await _raw(upstream.url + "/v1", "/chat/completions", body)
        via, response = await _raw(product.base_url, "/chat/completions", body)
    assert via == direct
    assert response.headers.get("Content-Length") == str(len(via))
    assert "Transfer-Encoding" not in response.headers
    assert "Content-Encoding" not in response.headers  # identity bytes, as before
