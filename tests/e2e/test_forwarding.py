"""Forwarding behaviour a client notices: streaming, cancellation, errors, bodies, headers."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from yarl import URL

from tests.support.fake_upstream import FakeUpstream
from tests.support.loopback import serve_on_loopback
from tests.support.proxy_server import ProxyServer, settings_for

CHAT_STREAM = {
    "model": "gpt-4o-mini",
    "stream": True,
    "messages": [{"role": "user", "content": "x"}],
}


async def test_first_sse_event_arrives_while_upstream_holds_the_next(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    fake_upstream.hold = asyncio.Event()
    async with (
        aiohttp.ClientSession() as client,
        client.post(proxy_server.base_url + "/chat/completions", json=CHAT_STREAM) as response,
    ):
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert first.startswith(b"data: {")
        assert b'"role":"assistant"' in first
        fake_upstream.hold.set()
        rest = await asyncio.wait_for(response.read(), 5)
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_client_disconnect_cancels_the_upstream_stream(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    fake_upstream.hold = asyncio.Event()  # never released: upstream keeps the stream open
    async with aiohttp.ClientSession() as client:
        response = await client.post(proxy_server.base_url + "/chat/completions", json=CHAT_STREAM)
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        response.close()  # the client goes away mid-stream
    await asyncio.wait_for(fake_upstream.stream_cancelled.wait(), 5)


async def test_gzip_upstream_is_decoded_for_a_client_that_did_not_ask(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    fake_upstream.gzip = True
    async with (
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.post(
            proxy_server.base_url + "/chat/completions",
            json={**CHAT_STREAM, "stream": False},
            headers={"Accept-Encoding": "identity"},
        ) as response,
    ):
        body = await response.read()
        assert "Content-Encoding" not in response.headers
    assert orjson.loads(body)["object"] == "chat.completion"
    # The client's Accept-Encoding never reaches upstream; aiohttp's own (gzip) does.
    assert "gzip" in fake_upstream.requests[-1].headers["Accept-Encoding"]


async def test_gzip_sse_stream_is_decoded_and_still_incremental(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    fake_upstream.gzip = True
    fake_upstream.hold = asyncio.Event()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as client,
        client.post(proxy_server.base_url + "/chat/completions", json=CHAT_STREAM) as response,
    ):
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert first.startswith(b"data: {")
        fake_upstream.hold.set()
        assert (await response.read()).endswith(b"data: [DONE]\n\n")


async def test_headers_query_and_method_are_forwarded_minus_hop_by_hop_and_meter(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.request(
            "PATCH",
            URL(proxy_server.base_url + "/echo/things/a?limit=3&after=x%2Fy", encoded=True),
            data=b"\x00\x01binary",
            headers={
                "Content-Type": "application/octet-stream",
                "OpenAI-Project": "proj_1",
                "OpenAI-Beta": "assistants=v2",
                "X-Meter-Tags": "env=prod",
                "Keep-Alive": "timeout=5",
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Host": "evil.example",
                "X-Forwarded-Host": "evil.example",
            },
        ) as response,
    ):
        echoed = await response.json()
    assert response.status == 200
    assert echoed["method"] == "PATCH"
    assert echoed["path"] == "/v1/echo/things/a"
    assert echoed["query"] == "limit=3&after=x%2Fy"
    assert echoed["sha256"] == hashlib.sha256(b"\x00\x01binary").hexdigest()
    headers = {k.lower(): v for k, v in echoed["headers"].items()}
    assert headers["openai-project"] == "proj_1"
    assert headers["openai-beta"] == "assistants=v2"
    assert headers["host"] == f"127.0.0.1:{fake_upstream.port}"
    for dropped in ("x-meter-tags", "keep-alive", "x-secret-hop", "x-forwarded-host"):
        assert dropped not in headers


async def test_upstream_unreachable_is_an_openai_shaped_502() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    settings = settings_for(f"http://127.0.0.1:{dead_port}")
    async with (
        ProxyServer(settings) as proxy,
        aiohttp.ClientSession() as client,
        client.get(proxy.base_url + "/models") as response,
    ):
        body = await response.json()
    assert response.status == 502
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "upstream_unreachable"


async def test_upstream_timeout_is_an_openai_shaped_504(fake_upstream: FakeUpstream) -> None:
    fake_upstream.hold = asyncio.Event()
    # Non-streamed chat answers at once, so use a stream held before its second event with a
    # read timeout shorter than the hold: headers arrive, the body stalls -> cut.
    settings = settings_for(fake_upstream.url, upstream={"read_timeout_s": 0.3})
    async with ProxyServer(settings) as proxy, aiohttp.ClientSession() as client:
        # A server that accepts and never answers: the headers timeout.
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        silent_settings = settings_for(f"http://127.0.0.1:{port}", upstream={"read_timeout_s": 0.3})
        async with ProxyServer(silent_settings) as silent_proxy:
            async with client.get(silent_proxy.base_url + "/models") as response:
                body = await response.json()
            assert response.status == 504
            assert body["error"]["code"] == "upstream_timeout"
        silent.close()
        # Mid-body timeout: the client sees a truncated stream, not a clean end.
        async with client.post(proxy.base_url + "/chat/completions", json=CHAT_STREAM) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def _generated(total: int, chunk: int, gate: asyncio.Event) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    while sent < total:
        yield block
        sent += len(block)
        if sent == chunk:
            # Only continue once upstream has started receiving: a proxy that buffered the
            # whole upload would never get here (deadlock -> timeout).
            await asyncio.wait_for(gate.wait(), 10)


async def test_large_upload_streams_through_without_being_held(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    total, chunk = 50 * 1024 * 1024, 256 * 1024
    expected = hashlib.sha256()
    block = bytes(range(256)) * (chunk // 256)
    for _ in range(total // chunk):
        expected.update(block)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            proxy_server.base_url + "/files",
            data=_generated(total, chunk, fake_upstream.first_body_bytes),
            headers={"Content-Type": "application/octet-stream"},
        ) as response,
    ):
        result = await response.json()
    assert result == {
        "bytes": total,
        "sha256": expected.hexdigest(),
        "content_type": "application/octet-stream",
    }


async def test_websocket_round_trip(fake_upstream: FakeUpstream, proxy_server: ProxyServer) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            proxy_server.url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime",
            headers={"Authorization": "Bearer sk-rt"},
            protocols=("realtime",),
        ) as ws,
    ):
        assert ws.protocol == "realtime"
        created = orjson.loads((await ws.receive(timeout=5)).data)
        assert created == {"type": "session.created", "session": {"model": "gpt-realtime"}}
        await ws.send_str('{"type":"response.create"}')
        done = orjson.loads((await ws.receive(timeout=5)).data)
        assert done["type"] == "response.done"
        assert done["response"]["usage"]["total_tokens"] == 17
        await ws.send_bytes(b"\x01\x02")
        assert (await ws.receive(timeout=5)).data == b"\x01\x02"
    assert fake_upstream.requests[-1].headers["Authorization"] == "Bearer sk-rt"


async def test_paths_outside_v1_are_not_forwarded(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer
) -> None:
    async with aiohttp.ClientSession() as client:
        for path in ("/v2/models", "/models", "/v1"):
            async with client.get(proxy_server.url + path) as response:
                assert response.status == 404
    assert fake_upstream.requests == []


async def test_sse_bytes_pass_through_unchanged_whatever_the_chunking() -> None:
    """Upstream SSE split at arbitrary byte positions reaches the client byte-identical."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    events = b"".join(
        b"event: response.output_text.delta\ndata: "
        + orjson.dumps({"n": i, "delta": "\u00e9x"})
        + b"\n\n"
        for i in range(6)
    )
    splits: list[list[int]] = []

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.integers(min_value=1, max_value=len(events) - 1), max_size=8, unique=True))
    def collect(cuts: list[int]) -> None:
        splits.append(sorted(cuts))

    collect()

    async def stream(request: web.Request) -> web.StreamResponse:
        cuts = [0, *splits[int(request.query["i"])], len(events)]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for a, b in itertools.pairwise(cuts):
            await response.write(events[a:b])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/stream", stream)
    runner = web.AppRunner(app)
    port = await serve_on_loopback(runner)
    try:
        async with (
            ProxyServer(settings_for(f"http://127.0.0.1:{port}")) as proxy,
            aiohttp.ClientSession() as client,
        ):
            for i in range(len(splits)):
                async with client.get(proxy.base_url + f"/stream?i={i}") as response:
                    assert await response.read() == events
    finally:
        await runner.cleanup()
