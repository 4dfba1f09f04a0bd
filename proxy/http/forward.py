"""Forwarding of everything under ``/v1/`` to the configured upstream, with the metering seam.

One :class:`Forwarder` per app; its ``handle`` is the route handler for ``/v1/{tail:.*}``. Per call:

1. the path is normalised (dot segments, percent-encoded dots and slashes, empty segments) and must
   still be under ``/v1/`` -- otherwise it is answered 404 here and never sent upstream;
2. an :class:`~proxy.http.exchange.Exchange` is built; JSON bodies up to
   ``metering.max_json_body_bytes`` are read whole into ``exchange.request_body``; every other body
   streams to upstream chunk by chunk;
3. ``hooks.on_request`` may refuse; then the request goes upstream (``exchange.upstream_body`` /
   ``exchange.upstream_authorization`` / ``upstream_traceparent`` when set), on the configured
   origin only;
4. response headers -> ``hooks.on_response`` -> a plan; each chunk is written to the client first,
   then fed to the tap (a body the plan says is read whole anyway - metered JSON, up to
   ``plan.buffer_limit`` - is read first and sent with its ``Content-Length``); the relay yields
   to the loop every 256 KiB so one body never holds it;
5. ``finally``: outcome, timestamps, ``hooks.on_finish`` exactly once, one log line.

Every hook call is guarded: a metering failure is reported to ``on_metering_error`` (once per stage
per call) and the call goes on. The forwarding target is fixed by :class:`UpstreamTarget`; nothing
from the client (absolute-form URIs, ``Host``, ``X-Forwarded-Host``, ``//host`` paths) can change it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

from aiohttp import (
    ClientConnectionError,
    ClientError,
    ClientPayloadError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    StreamReader,
    web,
)
from yarl import URL

from proxy.http.access_log import CallLogger
from proxy.http.endpoints import classify
from proxy.http.errors import not_found, proxy_error, upstream_timeout, upstream_unreachable
from proxy.http.exchange import Exchange, MeteringHooks, ResponsePlan
from proxy.http.headers import (
    client_response_headers,
    is_websocket_upgrade,
    upstream_request_headers,
)
from proxy.http.observation import NullTap, Tap
from proxy.http.upload_copy import tee_body
from proxy.http.websocket import relay_websocket
from proxy.settings import Settings

log = logging.getLogger("openai_meter.forward")

# (stage, exception) -> None; the app counts these (metering_errors_total{stage}).
MeteringErrorCallback = Callable[[str, BaseException], None]

FORWARDED_PREFIX: Final[str] = "/v1/"
# How much of a multipart body is copied for the meter to read its small form fields from.
_FORM_HEAD_BYTES: Final[int] = 64 * 1024
# A relay yields to the event loop after this many bytes without a forced pause (~2-3 ms of work).
_YIELD_EVERY_BYTES: Final[int] = 256 * 1024
# Characters left unescaped when re-encoding a normalised path segment (RFC 3986 pchar).
_PCHAR_SAFE: Final[str] = "!$&'()*+,;=:@-._~"
# A path made only of non-empty segments of unreserved characters, none of them "." or "..":
# already normalised (decoding, resolving and re-encoding would return it unchanged).
_PLAIN_PATH: Final = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+/?")


# --------------------------------------------------------------------------------------------
# Forwarding-target safety (pure)


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """The one origin (plus optional base path) the proxy ever connects to."""

    origin: str  # scheme://host[:port]
    base_path: str  # "" or "/prefix" (no trailing slash)
    scheme: str

    @classmethod
    def parse(cls, url: str) -> UpstreamTarget:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path], got {url!r}")
        origin = str(parsed.origin())
        return cls(origin=origin, base_path=parsed.raw_path.rstrip("/"), scheme=parsed.scheme)

    def url_for(self, encoded_path: str, query_string: str) -> URL:
        """``encoded_path`` must come from :func:`normalize_path` (starts with a single ``/``)."""
        text = self.origin + self.base_path + encoded_path
        if query_string:
            text += "?" + query_string
        return URL(text, encoded=True)


def egress_proxy_for(upstream_url: str) -> URL | None:
    """The HTTP(S) proxy the environment says to use for the upstream, resolved once at start.

    Same rules as ``trust_env`` (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``), but aiohttp's
    ``trust_env`` re-reads the environment and ``~/.netrc`` in a thread on *every* request, which
    was the largest single cost per call in the benchmark.
    """
    parsed = URL(upstream_url)
    proxies = getproxies_environment()
    proxy = proxies.get(parsed.scheme)
    if not proxy or proxy_bypass_environment(parsed.host or "", proxies):
        return None
    return URL(proxy)


def normalize_path(raw_path: str) -> tuple[str, str] | None:
    """Resolve a raw request path to ``(decoded, re-encoded)``; None if it climbs above the root.

    Percent-decoding happens *before* resolution, and decoded ``/`` and ``\\`` separate segments,
    so ``%2e%2e``, ``..%2f`` and ``..\\`` are dot segments like ``..``; empty segments collapse
    (``//host`` is just ``/host``). What is forwarded is the resolved path, re-encoded.
    """
    if _PLAIN_PATH.fullmatch(raw_path) is not None:
        return raw_path, raw_path  # the common case, e.g. /v1/chat/completions: nothing to do
    segments: list[str] = []
    for raw_segment in raw_path.split("/"):
        decoded = unquote(raw_segment, errors="surrogateescape")
        for piece in decoded.replace("\\", "/").split("/"):
            if piece in ("", "."):
                continue
            if piece == "..":
                if not segments:
                    return None
                segments.pop()
                continue
            segments.append(piece)
    trailing = raw_path.endswith("/") and bool(segments)
    decoded_path = "/" + "/".join(segments) + ("/" if trailing else "")
    encoded_path = (
        "/"
        + "/".join(quote(s, safe=_PCHAR_SAFE, errors="surrogateescape") for s in segments)
        + ("/" if trailing else "")
    )
    return decoded_path, encoded_path


# --------------------------------------------------------------------------------------------
# Request bodies


def is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def _read_bounded(content: StreamReader, limit: int) -> tuple[bytes, bool]:
    """Read up to ``limit`` bytes; ``(data, True)`` if that was the whole body."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts), False


async def _stream_body(prefix: bytes, content: StreamReader) -> AsyncIterator[bytes]:
    if prefix:
        yield prefix
    while True:
        chunk = await content.readany()
        if not chunk:
            return
        yield chunk


# --------------------------------------------------------------------------------------------
# The metering seam's default


class NullHooks:
    """Metering that observes nothing (used until a real meter is wired)."""

    __slots__ = ()

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        return None

    def on_response(self, exchange: Exchange) -> ResponsePlan:
        return ResponsePlan(tap=NullTap())

    def on_finish(self, exchange: Exchange, plan: ResponsePlan | None) -> None:
        return None


class _ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


# --------------------------------------------------------------------------------------------
# The forwarder


class Forwarder:
    def __init__(
        self,
        settings: Settings,
        hooks: MeteringHooks | None = None,
        *,
        on_metering_error: MeteringErrorCallback | None = None,
        call_logger: CallLogger | None = None,
    ) -> None:
        self.target = UpstreamTarget.parse(settings.upstream.url)
        self.egress_proxy = egress_proxy_for(settings.upstream.url)
        self.hooks: MeteringHooks = hooks if hooks is not None else NullHooks()
        self.session: ClientSession | None = None  # set by the app's cleanup_ctx
        self._on_metering_error = on_metering_error
        self._call_logger = call_logger if call_logger is not None else CallLogger()
        self._max_json = settings.metering.max_json_body_bytes
        self._connect_timeout_s = settings.upstream.connect_timeout_s
        self.timeout = ClientTimeout(
            total=None,
            sock_connect=settings.upstream.connect_timeout_s,
            sock_read=settings.upstream.read_timeout_s,
        )

    # -- guarded metering ---------------------------------------------------------------------

    def _metering_failed(self, stage: str, exc: BaseException, exchange: Exchange) -> None:
        log.error(
            "metering failed at %s (call %s %s continues)",
            stage,
            exchange.method,
            exchange.path,
            exc_info=exc,
            extra={"meter_fields": {"request_id": exchange.id, "stage": stage}},
        )
        if self._on_metering_error is not None:
            try:
                self._on_metering_error(stage, exc)
            except Exception:
                log.exception("on_metering_error callback failed")

    async def _on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        """Run the meter's request stages (guarded); a refusal is recorded as ``refused``."""
        try:
            refusal = await self.hooks.on_request(exchange)
        except Exception as exc:
            self._metering_failed("on_request", exc, exchange)
            return None
        if refusal is not None:
            exchange.outcome = "refused"
            exchange.status_code = refusal.status
        return refusal

    # -- entry point ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        normalised = normalize_path(request.rel_url.raw_path)
        if normalised is None or not normalised[0].startswith(FORWARDED_PREFIX):
            # e.g. /v1/../meter/x: the proxy's own namespace, never forwarded.
            return not_found(normalised[0] if normalised else request.path)
        path, encoded_path = normalised
        session = self.session
        if session is None:
            return proxy_error("The upstream client is not running.")
        exchange = Exchange(
            method=request.method,
            path=path,
            query_string=request.rel_url.raw_query_string,
            endpoint=classify(path),
            request_headers=request.headers,
        )
        url = self.target.url_for(encoded_path, exchange.query_string)
        plan: ResponsePlan | None = None
        try:
            plan_box: list[ResponsePlan] = []
            try:
                if is_websocket_upgrade(request.headers):
                    return await self._websocket(request, session, exchange, url, plan_box)
                return await self._forward(request, session, exchange, url, plan_box)
            finally:
                if plan_box:
                    plan = plan_box[0]
        except asyncio.CancelledError:
            exchange.outcome = "client_disconnect"
            raise
        except Exception as exc:  # a bug in the proxy itself: answer 500 if still possible
            exchange.outcome = "proxy_error"
            exchange.error = type(exc).__name__
            log.exception("proxy error on %s %s", exchange.method, exchange.path)
            if exchange.status_code is None:
                exchange.status_code = 500
                return proxy_error("The metering proxy failed to forward the request.")
            raise
        finally:
            self._finish(exchange, plan)
            self._call_logger.log(exchange)

    def _finish(self, exchange: Exchange, plan: ResponsePlan | None) -> None:
        """``hooks.on_finish`` exactly once (guarded). Called as soon as the upstream body has
        ended -- before the client's last bytes, so ``kill -9`` cannot fall between a whole
        response and its record -- and otherwise from ``handle``'s ``finally``."""
        if exchange.metered:
            return
        exchange.metered = True
        now = time.monotonic()
        if exchange.headers_monotonic is not None and exchange.upstream_done_monotonic is None:
            exchange.upstream_done_monotonic = now
        exchange.finished_monotonic = now
        exchange.finished_at = datetime.now(UTC)
        try:
            self.hooks.on_finish(exchange, plan)
        except Exception as exc:
            self._metering_failed("on_finish", exc, exchange)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _forward(
        self,
        request: web.Request,
        session: ClientSession,
        exchange: Exchange,
        url: URL,
        plan_box: list[ResponsePlan],
    ) -> web.StreamResponse:
        body: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            content_type = request.content_type
            exchange.content_type = content_type
            if is_json_content_type(content_type) and (
                request.content_length is None or request.content_length <= self._max_json
            ):
                data, whole = await _read_bounded(request.content, self._max_json)
                if whole:
                    exchange.request_body = data
                    body = data
                else:
                    body = _stream_body(data, request.content)
            elif content_type == "multipart/form-data":
                # Keep a copy of the head for the meter (model, size, quality...); the rest,
                # possibly a very large file, streams through untouched.
                head, whole = await _read_bounded(request.content, _FORM_HEAD_BYTES)
                exchange.request_body_head = head
                body = head if whole else _stream_body(head, request.content)
            else:
                body = _stream_body(b"", request.content)

        refusal = await self._on_request(exchange)
        if refusal is not None:
            return refusal

        if exchange.upstream_body is not None and exchange.request_body is not None:
            body = exchange.upstream_body
        if exchange.upload_tee is not None and body is not None:
            body = tee_body(
                body,
                exchange.upload_tee,
                lambda exc: self._metering_failed("upload_tee", exc, exchange),
            )
        headers = upstream_request_headers(
            request.headers,
            authorization=exchange.upstream_authorization,
            traceparent=exchange.upstream_traceparent,
            keep_content_length=not isinstance(body, bytes),
        )
        exchange.upstream_sent_monotonic = time.monotonic()
        try:
            upstream = await session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self.timeout,
                proxy=self.egress_proxy,
            )
        except TimeoutError as exc:
            exchange.outcome = "upstream_timeout"
            exchange.status_code = 504
            exchange.error = type(exc).__name__
            return upstream_timeout("no response headers within the configured timeout")
        except (ClientError, OSError) as exc:
            if request.transport is None or request.transport.is_closing():
                exchange.outcome = "client_disconnect"
                raise
            exchange.outcome = "upstream_error"
            exchange.status_code = 502
            exchange.error = type(exc).__name__
            return upstream_unreachable(type(exc).__name__)
        try:
            return await self._relay(request, exchange, upstream, plan_box)
        finally:
            if exchange.body_complete:
                upstream.release()
            else:  # cut short: close the connection so upstream stops generating
                upstream.close()

    async def _relay(
        self,
        request: web.Request,
        exchange: Exchange,
        upstream: ClientResponse,
        plan_box: list[ResponsePlan],
    ) -> web.StreamResponse:
        exchange.headers_monotonic = time.monotonic()
        status = upstream.status
        exchange.status_code = status
        exchange.response_headers = upstream.headers
        exchange.response_content_type = upstream.headers.get("Content-Type", "")
        exchange.request_id = upstream.headers.get("x-request-id")
        if status >= 400:
            exchange.outcome = "upstream_error"
        try:
            plan = self.hooks.on_response(exchange)
        except Exception as exc:
            self._metering_failed("on_response", exc, exchange)
            plan = ResponsePlan(tap=NullTap())
        plan_box.append(plan)
        tap = plan.tap
        rewriter = plan.rewriter
        tap_ok = True
        headers = client_response_headers(upstream.headers)
        first = True
        pending: list[bytes] = []
        failure: BaseException | None = None
        length: int | None = None
        if plan.buffer_limit > 0 and rewriter is None:
            # The tap reads this body whole anyway (JSON): read it first and send it with its
            # Content-Length, as upstream would have (the body is decoded, so upstream's own
            # length cannot be kept). Past the limit it streams like any other body.
            size = 0
            ended = False
            try:
                async for chunk in upstream.content.iter_any():
                    if first:
                        exchange.first_chunk_monotonic = time.monotonic()
                        first = False
                    pending.append(chunk)
                    if tap_ok:
                        tap_ok = self._feed(tap, chunk, exchange)
                    size += len(chunk)
                    if size > plan.buffer_limit:
                        break
                    if size // _YIELD_EVERY_BYTES != (size - len(chunk)) // _YIELD_EVERY_BYTES:
                        await asyncio.sleep(0)  # as below: never hold the loop for one body
                else:
                    ended = True
            except (TimeoutError, ClientPayloadError, ClientConnectionError, OSError) as exc:
                failure = exc  # reported below, after what did arrive was sent
            if ended:
                length = size
                # The whole body is here: record it before the client can have its response.
                exchange.body_complete = True
                self._finish(exchange, plan)

        response = web.StreamResponse(status=status, reason=upstream.reason, headers=headers)
        if length is not None:
            response.content_length = length  # sent with its length, not chunked (no join)
        try:
            await response.prepare(request)
        except (ConnectionError, ClientConnectionError) as exc:
            exchange.outcome = "client_disconnect"
            exchange.error = type(exc).__name__
            return response
        try:
            for chunk in pending:  # already fed to the tap
                await _write(response, chunk)
            pending = []
            if failure is not None:
                raise failure
            unyielded = 0
            async for chunk in upstream.content.iter_any():
                if first:
                    exchange.first_chunk_monotonic = time.monotonic()
                    first = False
                out = chunk
                if rewriter is not None:
                    try:
                        out = rewriter.feed(chunk)
                    except Exception as exc:
                        self._metering_failed("rewrite", exc, exchange)
                        rewriter = None
                if out:
                    await _write(response, out)
                if tap_ok:
                    tap_ok = self._feed(tap, chunk, exchange)
                unyielded += len(chunk)
                if unyielded > _YIELD_EVERY_BYTES:
                    # Reading, writing and metering need not suspend while upstream data is
                    # buffered (a decompressing gzip bomb always is): let other calls run.
                    unyielded = 0
                    await asyncio.sleep(0)
            exchange.upstream_done_monotonic = time.monotonic()
            # Upstream ended: record now, before the held-back tail and the end of the body.
            exchange.body_complete = True
            self._finish(exchange, plan)
            if rewriter is not None:
                try:
                    tail = rewriter.flush()
                except Exception as exc:
                    self._metering_failed("rewrite", exc, exchange)
                    tail = b""
                if tail:
                    await _write(response, tail)
            try:
                await response.write_eof()
            except (ConnectionError, ClientConnectionError) as exc:
                raise _ClientGone from exc
        except _ClientGone as exc:
            exchange.outcome = "client_disconnect"
            exchange.error = type(exc.__cause__).__name__ if exc.__cause__ else "client_gone"
        except TimeoutError as exc:
            exchange.outcome = "upstream_timeout"
            exchange.error = type(exc).__name__
            _abort(request)
        except (ClientPayloadError, ClientConnectionError, OSError) as exc:
            exchange.outcome = "upstream_error"
            exchange.error = type(exc).__name__
            _abort(request)
        return response

    def _feed(self, tap: Tap, chunk: bytes, exchange: Exchange) -> bool:
        """Feed the tap (guarded); False once it failed (it is not fed again)."""
        try:
            tap.feed(chunk)
        except Exception as exc:
            self._metering_failed("tap", exc, exchange)
            return False
        return True

    # -- WebSocket ------------------------------------------------------------------------------

    async def _websocket(
        self,
        request: web.Request,
        session: ClientSession,
        exchange: Exchange,
        url: URL,
        plan_box: list[ResponsePlan],
    ) -> web.StreamResponse:
        refusal = await self._on_request(exchange)
        if refusal is not None:
            return refusal
        headers = upstream_request_headers(
            request.headers,
            authorization=exchange.upstream_authorization,
            traceparent=exchange.upstream_traceparent,
            websocket=True,
        )
        exchange.stream = True
        exchange.upstream_sent_monotonic = time.monotonic()
        tap_failed = False

        def observe(message: bytes) -> None:
            # Each call is one complete upstream -> client message.
            nonlocal tap_failed
            if not plan_box:
                exchange.headers_monotonic = exchange.first_chunk_monotonic = time.monotonic()
                exchange.status_code = 101
                try:
                    plan_box.append(self.hooks.on_response(exchange))
                except Exception as exc:
                    self._metering_failed("on_response", exc, exchange)
                    plan_box.append(ResponsePlan(tap=NullTap()))
            if tap_failed:
                return
            try:
                plan_box[0].tap.feed(message)
            except Exception as exc:
                self._metering_failed("tap", exc, exchange)
                tap_failed = True

        response = await relay_websocket(
            request,
            session,
            url,
            headers,
            connect_timeout_s=self._connect_timeout_s,
            observe=observe,
            proxy=self.egress_proxy,
        )
        exchange.status_code = response.status
        if isinstance(response, web.WebSocketResponse):
            exchange.status_code = 101
            exchange.body_complete = True
        elif response.status >= 400:
            exchange.outcome = "upstream_timeout" if response.status == 504 else "upstream_error"
        return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except (ConnectionError, ClientConnectionError) as exc:
        raise _ClientGone from exc


def _abort(request: web.Request) -> None:
    """Cut the client connection so a truncated body is seen as truncated, not complete."""
    transport = request.transport
    if transport is not None:
        transport.abort()
