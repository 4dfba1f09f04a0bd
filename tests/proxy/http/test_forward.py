"""The metering seam as the forwarder drives it: order, exactly-once finish, guarded failures."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp import web

from proxy.http.errors import error_response
from proxy.http.exchange import Exchange, ResponsePlan
from proxy.http.forward import normalize_path
from proxy.http.observation import Observation
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ProxyServer, settings_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


class RecordingTap:
    def __init__(self, events: list[str], fail: bool = False) -> None:
        self.events = events
        self.fed: list[bytes] = []
        self.fail = fail

    def feed(self, chunk: bytes) -> None:
        self.events.append("feed")
        if self.fail:
            raise RuntimeError("tap broke")
        self.fed.append(chunk)

    def finish(self, *, complete: bool) -> Observation:
        return Observation(usage=None, source="none")


class UpperRewriter:
    def feed(self, chunk: bytes) -> bytes:
        return chunk.upper()

    def flush(self) -> bytes:
        return b"<END>"


class RecordingHooks:
    def __init__(
        self,
        *,
        refuse: bool = False,
        fail_at: str | None = None,
        tap_fails: bool = False,
        rewrite: bool = False,
        inject: bytes | None = None,
    ) -> None:
        self.events: list[str] = []
        self.finished: list[Exchange] = []
        self.refuse = refuse
        self.fail_at = fail_at
        self.tap = RecordingTap(self.events, fail=tap_fails)
        self.rewrite = rewrite
        self.inject = inject

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        self.events.append("on_request")
        if self.fail_at == "on_request":
            raise RuntimeError("boom")
        if self.inject is not None:
            exchange.upstream_body = self.inject
            exchange.upstream_authorization = "Bearer sk-real"
        if self.refuse:
            return error_response(
                429, "budget", "budget_exceeded", headers={"x-should-retry": "false"}
            )
        return None

    def on_response(self, exchange: Exchange) -> ResponsePlan:
        self.events.append("on_response")
        if self.fail_at == "on_response":
            raise RuntimeError("boom")
        return ResponsePlan(tap=self.tap, rewriter=UpperRewriter() if self.rewrite else None)

    def on_finish(self, exchange: Exchange, plan: ResponsePlan | None) -> None:
        self.events.append("on_finish")
        self.finished.append(exchange)
        if self.fail_at == "on_finish":
            raise RuntimeError("boom")


async def _run(
    upstream: FakeUpstream,
    hooks: RecordingHooks,
    path: str = "/chat/completions",
    body: object = CHAT,
) -> tuple[int, bytes, list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    settings = settings_for(upstream.url)
    async with (
        ProxyServer(
            settings,
            hooks=hooks,
            on_metering_error=lambda stage, exc: errors.append((stage, str(exc))),
        ) as proxy,
        aiohttp.ClientSession() as client,
        client.post(proxy.base_url + path, json=body) as response,
    ):
        data = await response.read()
        status = response.status
    return status, data, errors


async def test_hooks_run_in_order_once_and_exchange_is_filled(fake_upstream: FakeUpstream) -> None:
    hooks = RecordingHooks()
    status, body, errors = await _run(fake_upstream, hooks)
    assert status == 200 and errors == []
    assert hooks.events[0:2] == ["on_request", "on_response"]
    assert hooks.events[-1] == "on_finish" and hooks.events.count("on_finish") == 1
    assert b"".join(hooks.tap.fed) == body
    (ex,) = hooks.finished
    assert ex.endpoint == "chat.completions" and ex.path == "/v1/chat/completions"
    assert ex.request_body is not None and orjson.loads(ex.request_body) == CHAT
    assert ex.content_type == "application/json"
    assert ex.status_code == 200 and ex.outcome == "ok" and ex.body_complete
    assert ex.request_id == "req_chat_1"
    assert ex.request_headers["Content-Type"] == "application/json"
    stamps = [
        ex.started_monotonic,
        ex.upstream_sent_monotonic,
        ex.headers_monotonic,
        ex.first_chunk_monotonic,
        ex.upstream_done_monotonic,
        ex.finished_monotonic,
    ]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    assert ex.finished_at is not None and ex.finished_at >= ex.started_at


async def test_refusal_is_sent_and_upstream_never_called(fake_upstream: FakeUpstream) -> None:
    hooks = RecordingHooks(refuse=True)
    status, body, _ = await _run(fake_upstream, hooks)
    assert status == 429
    assert orjson.loads(body)["error"]["type"] == "budget_exceeded"
    assert fake_upstream.requests == []
    assert hooks.events == ["on_request", "on_finish"]
    assert hooks.finished[0].status_code == 429
    assert hooks.finished[0].outcome == "refused"


async def test_upstream_body_and_authorization_override_are_sent(
    fake_upstream: FakeUpstream,
) -> None:
    injected = orjson.dumps({**CHAT, "stream_options": {"include_usage": True}})
    hooks = RecordingHooks(inject=injected)
    await _run(fake_upstream, hooks)
    seen = fake_upstream.requests[-1]
    assert seen.body == injected
    assert seen.headers["Authorization"] == "Bearer sk-real"
    assert seen.headers["Content-Length"] == str(len(injected))


async def test_rewriter_changes_client_bytes_but_tap_sees_upstream_bytes(
    fake_upstream: FakeUpstream,
) -> None:
    hooks = RecordingHooks(rewrite=True)
    _, body, _ = await _run(fake_upstream, hooks)
    upstream_bytes = b"".join(hooks.tap.fed)
    assert body == upstream_bytes.upper() + b"<END>"


async def test_metering_failures_never_break_the_call(fake_upstream: FakeUpstream) -> None:
    for stage in ("on_request", "on_response", "on_finish"):
        hooks = RecordingHooks(fail_at=stage)
        status, body, errors = await _run(fake_upstream, hooks)
        assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
        assert errors == [(stage, "boom")]
    hooks = RecordingHooks(tap_fails=True)
    fake_upstream.stream_events = 8
    status, body, errors = await _run(fake_upstream, hooks, body={**CHAT, "stream": True})
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert errors == [("tap", "tap broke")]  # reported once per call, not per chunk


async def test_upstream_error_outcome(fake_upstream: FakeUpstream) -> None:
    fake_upstream.fail(500)
    hooks = RecordingHooks()
    status, _, _ = await _run(fake_upstream, hooks)
    assert status == 500
    assert hooks.finished[0].outcome == "upstream_error"
    assert hooks.finished[0].body_complete


async def test_client_disconnect_outcome(fake_upstream: FakeUpstream) -> None:
    fake_upstream.hold = asyncio.Event()
    hooks = RecordingHooks()
    async with ProxyServer(settings_for(fake_upstream.url), hooks=hooks) as proxy:
        async with aiohttp.ClientSession() as client:
            response = await client.post(
                proxy.base_url + "/chat/completions", json={**CHAT, "stream": True}
            )
            await response.content.readuntil(b"\n\n")
            response.close()
        for _ in range(100):
            if hooks.finished:
                break
            await asyncio.sleep(0.02)
    (ex,) = hooks.finished
    assert ex.outcome == "client_disconnect" and not ex.body_complete


def test_normalize_path() -> None:
    assert normalize_path("/v1/a/./b/../c") == ("/v1/a/c", "/v1/a/c")
    assert normalize_path("/v1/%2e%2e/meter") == ("/meter", "/meter")
    assert normalize_path("/v1/..%2Fmeter") == ("/meter", "/meter")
    assert normalize_path("/v1/models/") == ("/v1/models/", "/v1/models/")
    assert normalize_path("/v1/files/a%20b") == ("/v1/files/a b", "/v1/files/a%20b")
    assert normalize_path("/../x") is None
    assert normalize_path("//evil.com/v1/x") == ("/evil.com/v1/x", "/evil.com/v1/x")
