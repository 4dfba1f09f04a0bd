"""A fixed workload for :class:`proxy.observe.metrics.Metrics` whose exposition is kept as golden data.

``golden/*.txt`` were produced by the ``prometheus_client``-metric implementation (one ``Counter`` /
``Histogram`` / ``Gauge`` child per series) that the collector-based one replaced; the collector
must export the same bytes for the same records, in the Prometheus text format and in OpenMetrics.
Regenerate (only when the exposition is meant to change) with
``.venv/bin/python -m tests.proxy.observe.exposition_scenario``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from proxy.http.exchange import Exchange
from proxy.observe.metrics import Metrics, MetricsStage
from tests.proxy.observe.test_metrics import MODELS, record

GOLDEN = Path(__file__).parent / "golden"
TEXT = GOLDEN / "exposition.txt"
OPENMETRICS = GOLDEN / "exposition.openmetrics.txt"
CREATED_AT = 1_700_000_000.0


@contextmanager
def pinned_clock() -> Iterator[None]:
    """``time.time()`` ticks 0.25 s per call: each series' ``_created`` tells when it was made.

    Logging is off meanwhile: a log record reads the clock too (on some Python versions).
    """
    ticks = itertools.count()
    logging.disable(logging.CRITICAL)
    try:
        with mock.patch.object(time, "time", side_effect=lambda: CREATED_AT + next(ticks) / 4):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _records() -> list[dict[str, Any]]:
    return [
        {},  # a plain priced chat call
        {"id": "r2", "cost_usd": Decimal("0.1"), "latency_ms": 3_000.0},
        {
            "id": "r3",
            "status_code": 429,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
            "usage_source": "none",
            "cost_usd": None,
            "unpriced_reason": "no_usage",
            "latency_ms": 12.5,
        },
        {
            "id": "r4",
            "stream": True,
            "ttft_ms": 250.0,
            "usage_source": "estimated",
            "estimate_reason": "stream_cut",
            "user": "alice",
            "key_fingerprint": "sha256:aaaaaaaaaaaa",
        },
        {
            "id": "r5",
            "stream": True,
            "ttft_ms": 0.5,
            "usage_source": "estimated",
            "estimate_reason": None,
            "user": "bob",
            "team": "ads",
            "service_tier": "flex",
        },
        {
            "id": "r6",
            "model": "mystery",
            "model_requested": "mystery",
            "cost_usd": None,
            "unpriced_reason": "no_price",
            "team": "ghosts",
            "user": "carol",
        },
        {
            "id": "r7",
            "endpoint": "embeddings",
            "path": "/v1/embeddings",
            "model": "text-embedding-3-small",
            "model_requested": "text-embedding-3-small",
            "input_tokens": 64,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": Decimal("0.00000128"),
            "latency_ms": 80.0,
            "service_tier": "weird",
            "user": "dave",
        },
        {
            "id": "r8",
            "audio_input_tokens": 7,
            "audio_output_tokens": 9,
            "image_input_tokens": 11,
            "image_output_tokens": 13,
            "cache_write_tokens": 17,
            "latency_ms": None,
            "status_code": None,
            "model": None,
            "model_requested": "gpt-4o",
        },
        {
            "id": "r9",
            "endpoint": "responses",
            "path": "/v1/responses",
            "input_tokens": 70_000_000,
            "output_tokens": 4,
            "latency_ms": 100_000.0,
            "cost_usd": Decimal("12.345678901234"),
            "user": "alice",
            "key_fingerprint": "sha256:bbbbbbbbbbbb",
        },
        {
            "id": "r10",
            "endpoint": "/v1/unknown",
            "latency_ms": 10.0,
            "input_tokens": 1,
            "output_tokens": 1,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
        },
        {"id": "r11", "input_tokens": "many"},  # broken: counted in metering_errors_total
    ]


def _exchange(sent: float | None, done: float | None, headers: dict[str, str]) -> Exchange:
    exchange = Exchange(
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        endpoint="chat.completions",
        request_headers={},
        started_monotonic=100.0,
    )
    exchange.upstream_sent_monotonic = sent
    exchange.upstream_done_monotonic = done
    exchange.finished_monotonic = None if done is None else done + 0.00025
    exchange.response_headers = CIMultiDict(headers)
    return exchange


def run(**options: Any) -> CollectorRegistry:
    """The workload on a fresh registry (call inside :func:`pinned_clock`)."""
    registry = CollectorRegistry()
    metrics = Metrics(
        registry, models=MODELS, teams=("search", "ads"), usage_tier="tier3", **options
    )
    for overrides in _records():
        metrics.submit(record(**overrides))
    stage = MetricsStage(metrics)
    limits = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "1999985",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-ratelimit-reset-requests": "12ms",
    }
    stage.on_record(_exchange(100.0004, 101.0, limits), record())
    stage.on_record(_exchange(100.02, None, {"x-ratelimit-remaining-requests": "3"}), record())
    stage.on_record(_exchange(None, None, {}), record(model="gpt-4o"))
    metrics.observe_overhead(0.3)
    metrics.metering_error("tap")
    metrics.on_error("tap", RuntimeError("boom"))
    metrics.estimated("embeddings", "upload_probe")
    metrics.set_budget("search", "daily", Decimal("7.50"), Decimal("10"))
    metrics.set_budget("ghost", "monthly", Decimal("1.25"), None)
    metrics.set_budget("search", "daily", Decimal("8.75"), Decimal("10"))
    return registry


OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "identity": {"user_labels": True, "key_labels": True, "max_identity_values": 3},
}


def exposition() -> tuple[bytes, bytes]:
    """(text format, OpenMetrics) for every option set, concatenated with a header per set."""
    text, openmetrics = b"", b""
    with pinned_clock():
        for name, options in OPTIONS.items():
            registry = run(**options)
            text += f"# --- {name}\n".encode() + generate_latest(registry)
            openmetrics += f"# --- {name}\n".encode() + generate_openmetrics(registry)
    return text, openmetrics


if __name__ == "__main__":
    text, openmetrics = exposition()
    GOLDEN.mkdir(exist_ok=True)
    TEXT.write_bytes(text)
    OPENMETRICS.write_bytes(openmetrics)
    print(f"wrote {TEXT} ({len(text)} bytes) and {OPENMETRICS} ({len(openmetrics)} bytes)")
