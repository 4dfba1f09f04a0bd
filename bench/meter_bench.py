"""The product's per-call metering work, in process: what ``openai-meter serve`` adds to a bare proxy.

Wired like :func:`proxy.app.create_app` (real price book, Prometheus metrics, attribution, budget
and metrics stages, in-memory dedupe), with the ledger writer replaced by a queue-append sink (its
``submit`` is a deque append; the batched insert runs elsewhere and is measured by
``bench.ledger_bench``). Per call: the forwarder's pure work (path normalisation, ``Exchange``,
header filtering both ways) and the meter's hooks for a non-streamed and a streamed chat call.

``run()`` returns microseconds per call (lower is better). ``python -m bench.meter_bench profile``
prints a cProfile of the JSON call instead.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from bench.upstream import CHAT_JSON, _sse_chunks
from pricing.book import PriceBook
from proxy.http.endpoints import classify
from proxy.http.exchange import Exchange, RequestStage
from proxy.http.forward import normalize_path
from proxy.http.headers import client_response_headers, upstream_request_headers
from proxy.observe.metrics import Metrics, MetricsStage
from proxy.teams.attribution import AttributionStage, TeamDirectory
from proxy.teams.budgets import BudgetStage, BudgetTracker
from proxy.usage.dedupe import MemoryDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from storage.record import UsageRecord

REQUEST_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            "Host": "127.0.0.1:8080",
            "User-Agent": "Python/3.12 aiohttp/3.14",
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json",
            "Authorization": "Bearer sk-bench",
            "Content-Length": "70",
        }
    )
)
RESPONSE_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(CHAT_JSON)),
            "Date": "Mon, 01 Jan 2024 00:00:00 GMT",
            "Server": "Python/3.12 aiohttp/3.14",
        }
    )
)
SSE_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            "Content-Type": "text/event-stream",
            "Transfer-Encoding": "chunked",
            "Date": "Mon, 01 Jan 2024 00:00:00 GMT",
            "Server": "Python/3.12 aiohttp/3.14",
        }
    )
)
PAYLOAD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


class _QueueSink:
    """Stands in for the ledger writer's ``submit`` (a bounded deque append)."""

    def __init__(self) -> None:
        self.queue: deque[UsageRecord] = deque(maxlen=1024)

    def submit(self, record: UsageRecord) -> None:
        self.queue.append(record)


async def _no_spend(*_: object) -> dict[str, dict[str, Any]]:
    return {}


def product_meter(first_stages: Sequence[RequestStage] = ()) -> UsageMeter:
    """``first_stages`` run before the product's own (where ``create_app`` puts the OTel stage)."""
    book = PriceBook.load()
    metrics = Metrics(CollectorRegistry(), models=book.models(), teams=(), canonical=book.canonical)
    tracker = BudgetTracker((), _no_spend)
    return UsageMeter(
        pricer=book,
        sinks=[_QueueSink(), metrics],
        encodings=Encodings(),  # never loaded: every call below reports usage
        dedupe=MemoryDedupe(),
        stages=[
            *first_stages,
            AttributionStage(TeamDirectory({}, {})),
            BudgetStage(tracker),
            MetricsStage(metrics),
        ],
        on_error=metrics.on_error,
    )


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (no stage awaits here) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("coroutine suspended")


def call(
    meter: UsageMeter, stream: bool, request_headers: CIMultiDictProxy[str] = REQUEST_HEADERS
) -> Callable[[], None]:
    body = orjson.dumps({**PAYLOAD, "stream": stream})
    chunks = _sse_chunks(True) if stream else [CHAT_JSON]
    headers = SSE_HEADERS if stream else RESPONSE_HEADERS

    def one() -> None:
        normalised = normalize_path("/v1/chat/completions")
        assert normalised is not None
        path = normalised[0]
        ex = Exchange(
            method="POST",
            path=path,
            query_string="",
            endpoint=classify(path),
            request_headers=request_headers,
        )
        ex.content_type = "application/json"
        ex.request_body = body
        _run_sync(meter.on_request(ex))
        upstream_request_headers(
            request_headers, traceparent=ex.upstream_traceparent, keep_content_length=False
        )
        ex.upstream_sent_monotonic = time.monotonic()
        ex.headers_monotonic = time.monotonic()
        ex.status_code = 200
        ex.response_headers = headers
        ex.response_content_type = headers.get("Content-Type", "")
        ex.request_id = headers.get("x-request-id")
        plan = meter.on_response(ex)
        client_response_headers(headers)
        rewriter = plan.rewriter
        for chunk in chunks:
            if rewriter is not None:
                rewriter.feed(chunk)
            plan.tap.feed(chunk)
        if rewriter is not None:
            rewriter.flush()
        ex.body_complete = True
        ex.upstream_done_monotonic = ex.finished_monotonic = time.monotonic()
        meter.on_finish(ex, plan)

    return one


def _per_call_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(200):
        fn()  # warm caches (label children, price quotes)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best * 1e6


def run() -> dict[str, float]:
    meter = product_meter()
    return {
        "calibration_empty_call_us": _per_call_us(lambda: None, 100_000),
        "product_json_call_us": _per_call_us(call(meter, stream=False), 2000),
        "product_sse_call_us": _per_call_us(call(meter, stream=True), 2000),
    }


def profile(stream: bool) -> None:
    one = call(product_meter(), stream=stream)
    for _ in range(200):
        one()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5000):
        one()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(45)


def main() -> None:
    if sys.argv[1:2] == ["profile"]:
        profile(stream=sys.argv[2:3] == ["sse"])
        return
    for key, value in run().items():
        print(f"{key:40s} {value:10.3f}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
