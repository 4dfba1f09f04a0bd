"""The one object that travels through a forwarded call, and the seam metering plugs into.

Lifecycle (called by ``proxy.http.forward``; each moment exactly once, in this order):

1. ``hooks.on_request(exchange)`` – after the request line, headers and (for JSON) body were read.
   May rewrite ``exchange.upstream_body`` (only to add ``stream_options.include_usage``) or return a
   ``web.Response`` to answer the client without calling upstream (budget exceeded, bad tags header).
2. ``hooks.on_response(exchange)`` – when upstream response headers arrived (``status_code``,
   ``response_headers`` set). Returns a :class:`ResponsePlan`: the tap that reads a copy of the body,
   and an optional rewriter applied to the bytes sent to the client.
3. For each upstream chunk: ``out = rewriter.feed(chunk)`` (or ``chunk``), written to the client
   FIRST, then ``tap.feed(chunk)``. Except with ``plan.buffer_limit``: the body (the tap reads it
   whole anyway) is fed to the tap as it arrives and sent once complete, with its length.
4. ``hooks.on_finish(exchange, plan)`` – in a ``finally``: success, upstream error, client
   disconnect, timeout. ``exchange.outcome`` says which. ``plan`` is ``None`` when no response
   headers ever arrived.

A metering failure must never break the call: ``proxy.http.forward`` guards every hook call.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from aiohttp import web

from proxy.http.observation import Tap
from storage.record import Outcome, UsageRecord


class StreamRewriter(Protocol):
    """Transforms the bytes the client receives (e.g. drops the injected usage-only SSE chunk)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass(slots=True)
class ResponsePlan:
    tap: Tap
    rewriter: StreamRewriter | None = None
    # > 0: the tap reads the body whole anyway (JSON): the forwarder reads up to this many bytes
    # before answering, and a body that ended within it goes out with its Content-Length.
    buffer_limit: int = 0


@dataclass(slots=True)
class Attribution:
    """Who spent. ``team`` comes from configuration only, never from a client header."""

    team: str = "unassigned"
    project: str | None = None
    organization: str | None = None
    key_fingerprint: str | None = None
    user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


_ID_RANDOM_BITS: Final = 80
_ID_MASK: Final = (1 << _ID_RANDOM_BITS) - 1
_id_state: list[Any] = []  # [random 80-bit base, counter]: per process, drawn again after fork


def _draw_id_base() -> None:
    _id_state[:] = [int.from_bytes(os.urandom(_ID_RANDOM_BITS // 8), "big"), itertools.count()]


_draw_id_base()
os.register_at_fork(after_in_child=_draw_id_base)


def new_record_id() -> str:
    """32 hex chars: the time in Unix milliseconds (48 bits), then 80 bits — UUIDv7's layout.

    Ids that grow with time land at the right edge of the ledger's primary-key index instead of at a
    random page of it: SQLite inserts measured 14.0 vs 22.6 µs a row at 150k rows with random ids,
    and the gap grows with the table (docs/performance.md). The 80 bits are a random base drawn
    once per process (again in a forked child) plus a counter: unique within a process, and two
    processes or replicas would need 80-bit bases a few calls apart to meet — without a
    ``getrandom`` system call per request.
    """
    base, counter = _id_state
    return f"{time.time_ns() // 1_000_000:012x}{(base + next(counter)) & _ID_MASK:020x}"


@dataclass(slots=True)
class Exchange:
    method: str
    path: str  # normalised, always starting with /v1/
    query_string: str
    endpoint: str  # chat.completions, responses, embeddings, ... (see proxy.http.endpoints)
    request_headers: Mapping[str, str]  # as the client sent them (case-insensitive mapping)
    id: str = field(default_factory=lambda: new_record_id())
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)
    content_type: str = ""
    # JSON request bodies are read whole (bounded); ``request_json`` is parsed once, here.
    request_body: bytes | None = None
    request_json: dict[str, Any] | None = None
    # The first bytes of a multipart body (it streams upstream whole; this is a copy of its head,
    # where the SDKs put the small fields such as ``model``, ``size`` and ``quality``).
    request_body_head: bytes | None = None
    # What is actually sent upstream; differs from request_body only by usage injection.
    upstream_body: bytes | None = None
    # When set (virtual keys), sent upstream as the Authorization header instead of the client's.
    upstream_authorization: str | None = None
    # When set (tracing), sent upstream as the W3C ``traceparent`` header instead of the client's.
    upstream_traceparent: str | None = None
    model_requested: str | None = None
    stream: bool = False
    service_tier_requested: str | None = None
    usage_injected: bool = False
    attribution: Attribution = field(default_factory=Attribution)
    # Filled when upstream answers.
    status_code: int | None = None
    response_headers: Mapping[str, str] | None = None
    response_content_type: str = ""
    request_id: str | None = None
    upstream_sent_monotonic: float | None = None  # request handed to the upstream client
    headers_monotonic: float | None = None  # upstream response headers arrived
    upstream_done_monotonic: float | None = None  # upstream body fully read (or cut)
    first_chunk_monotonic: float | None = None
    finished_monotonic: float | None = None
    finished_at: datetime | None = None
    outcome: Outcome = "ok"
    # True once the upstream body was read to its end (taps use it as ``finish(complete=...)``);
    # False when cut by either side or never started.
    body_complete: bool = False
    # Set when ``hooks.on_finish`` ran: for a body read to its end that is *before* the client gets
    # its last bytes, so a record exists (journaled) for every call that got a whole response.
    metered: bool = False
    error: str | None = None
    # Scratch space for stages that need to carry state from on_request to on_finish
    # (e.g. a budget reservation). Keys are the stage's own names.
    extras: dict[str, Any] = field(default_factory=dict)
    # Set by ``on_request`` to get a copy of the request body as it streams upstream: called with
    # every chunk sent (the already-read head first), then with ``b""`` once the body ended.
    upload_tee: Callable[[bytes], None] | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.finished_monotonic is None:
            return None
        return (self.finished_monotonic - self.started_monotonic) * 1000.0

    @property
    def ttft_ms(self) -> float | None:
        if self.first_chunk_monotonic is None:
            return None
        return (self.first_chunk_monotonic - self.started_monotonic) * 1000.0


class RequestStage(Protocol):
    """A small policy step run by the meter around each call (attribution, budgets, ...).

    ``on_request`` may fill ``exchange.attribution`` / ``upstream_authorization`` or refuse the call
    by returning a response; ``on_record`` sees the finished record (e.g. to settle a budget
    reservation). Neither may block on I/O for long: the client is waiting.
    """

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None: ...

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None: ...


class MeteringHooks(Protocol):
    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None: ...

    def on_response(self, exchange: Exchange) -> ResponsePlan: ...

    def on_finish(self, exchange: Exchange, plan: ResponsePlan | None) -> None: ...
