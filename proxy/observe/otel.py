"""OpenTelemetry export (the ``otel`` extra; ``otel.enabled``, off by default).

One :class:`OtelStage` per app, a :class:`proxy.http.exchange.RequestStage` first in the stages:

* ``on_request`` continues the client's W3C ``traceparent`` (a new trace when it sent none or one
  the W3C rules reject): it picks the call's span id and sets ``exchange.upstream_traceparent``, so
  the upstream sees the proxy's span as its parent (the edge replaces the header; it never imports
  this module). The client's ``tracestate`` passes through unchanged.
* ``on_record`` - after the response went to the client, with the finished record, the moment the
  Prometheus metrics are updated too - builds the finished span and updates the metric aggregates.

Why not the SDK's ``Tracer`` and ``Meter`` on the call path: measured (``bench/otel_bench.py``,
docs/performance.md), a span through ``Tracer.start_span``/``set_attributes``/``end`` plus three
instrument updates cost ~385 µs per call on this machine, more than the whole meter. Everything
about a call is known when its record is, so the span is built once, finished, as the SDK's own
``ReadableSpan``; and metrics are aggregated the way :mod:`proxy.observe.metrics` does for
Prometheus (plain objects owned by the event loop's thread, O(1) per record). On the call, then:
a few dict lookups and additions and a bounded ``deque`` append.

Export runs in one daemon thread (``otel-export``): every second it sends the waiting spans, and
every ``otel.metrics_interval_ms`` a snapshot of the aggregates (cumulative temporality), both with
the SDK's OTLP/HTTP exporters (protobuf). Spans waiting beyond ``otel.max_queue_size`` are dropped
(counted, logged once), never waited for. A collector that is down costs retries in that thread
only (a round stops at the first failed batch). ``shutdown`` exports what is left when the
collector answered the last export, so it waits at most about ``otel.timeout_s``.

Names follow the OpenTelemetry GenAI semantic conventions: ``gen_ai.client.token.usage``
({token}, histogram, ``gen_ai.token.type`` input/output), ``gen_ai.client.operation.duration``
(s, histogram) and, with no convention for money, ``openai_meter.cost`` (USD, monotonic sum; float
at this edge as in Prometheus, the ledger stays exact). Metric attributes are bounded like the
Prometheus labels (:class:`~proxy.observe.metrics.LabelBounds`: catalog models + ``other``,
configured teams + ``unassigned``). Span attributes carry the model, tokens, cost (the exact decimal
as a string), team, endpoint, status and the ledger record id - never a body, a key, a key
fingerprint, a user or tags.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from proxy.http.exchange import Exchange
from proxy.observe.metrics import (
    DURATION_BUCKETS,
    GENAI_OPERATIONS,
    PROVIDER,
    TOKEN_BUCKETS,
    LabelBounds,
)
from proxy.settings import OtelSettings
from storage.record import UsageRecord

log = logging.getLogger(__name__)

SCOPE: Final = InstrumentationScope("openai-meter")
_SPAN_KEY: Final = "otel.trace"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_MAX_TRACEPARENT: Final = 512  # as the SDK's propagator: longer is ignored
_TRACEPARENT: Final = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?", re.ASCII
)
_SPAN_BATCH: Final = 512
_SPAN_DELAY_S: Final = 1.0
_UNSET: Final = Status(StatusCode.UNSET)
_ERROR: Final = Status(StatusCode.ERROR)
_CUMULATIVE: Final = AggregationTemporality.CUMULATIVE
_LOW_64: Final = (1 << 64) - 1

Attributes = dict[str, str | bool | int | float]


# --- pure helpers ------------------------------------------------------------------------------


def unix_ns(moment: datetime) -> int:
    """A timezone-aware datetime as integer nanoseconds since the epoch (exact to the microsecond)."""
    return ((moment - _EPOCH) // _US) * 1000


def operation(endpoint: str) -> str:
    return GENAI_OPERATIONS.get(endpoint, endpoint)


def span_name(endpoint: str, model: str | None) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}`` (semconv), bounded in length."""
    name = operation(endpoint)
    return f"{name} {model[:128]}" if model else name


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    def header(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """A W3C Trace Context ``traceparent`` or None when the rules reject it (version ``ff``,
    all-zero ids, upper case, a suffix on version 00, over 512 characters)."""
    if value is None or len(value) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return TraceParent(trace_id, span_id, int(flags_hex, 16))


def span_attributes(record: UsageRecord, *, server_address: str | None = None) -> Attributes:
    """What a finished call's span carries. Pure. Never bodies, keys, fingerprints, users or tags;
    client-chosen strings (model names, response ids) are cut to 256 characters."""
    attrs: Attributes = {
        "gen_ai.operation.name": operation(record.endpoint),
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.stream": bool(record.stream),
        "openai_meter.endpoint": record.endpoint,
        "openai_meter.team": record.team,
        "openai_meter.outcome": record.outcome,
        "openai_meter.usage_source": record.usage_source,
        "openai_meter.record_id": record.id,
    }
    if server_address:
        attrs["server.address"] = server_address
    if record.model_requested:
        attrs["gen_ai.request.model"] = record.model_requested[:256]
    if record.model:
        attrs["gen_ai.response.model"] = record.model[:256]
    if record.response_id:
        attrs["gen_ai.response.id"] = record.response_id[:256]
    if record.service_tier:
        attrs["openai.response.service_tier"] = record.service_tier[:64]
    if record.status_code is not None:
        attrs["http.response.status_code"] = record.status_code
    if record.usage_source != "none":
        attrs["gen_ai.usage.input_tokens"] = record.input_tokens
        attrs["gen_ai.usage.output_tokens"] = record.output_tokens
        if record.cached_input_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = record.cached_input_tokens
        if record.cache_write_tokens:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = record.cache_write_tokens
        if record.reasoning_tokens:
            attrs["gen_ai.usage.reasoning.output_tokens"] = record.reasoning_tokens
    if record.cost_usd is not None:
        attrs["openai_meter.cost_usd"] = str(record.cost_usd)  # exact decimal, as in reports
    else:
        attrs["openai_meter.unpriced"] = True
    if record.ttft_ms is not None and record.stream:
        attrs["gen_ai.response.time_to_first_chunk"] = record.ttft_ms / 1000.0
    error = error_type(record)
    if error is not None:
        attrs["error.type"] = error
    return attrs


def error_type(record: UsageRecord) -> str | None:
    """semconv ``error.type``: the outcome for failures of the proxy's making, else the status."""
    if record.outcome not in ("ok", "upstream_error"):
        return record.outcome
    status = record.status_code
    if status is not None and status >= 400:
        return str(status)
    if record.outcome == "upstream_error":
        return "upstream_error"
    return None


# --- metric aggregates (owned by the event loop's thread; snapshotted by the export thread) -----


class _Hist:
    __slots__ = ("bounds", "counts", "max", "min", "start", "sum")

    def __init__(self, bounds: tuple[float, ...], start: int) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start = start

    def record(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value


class _Total:
    __slots__ = ("start", "value")

    def __init__(self, start: int) -> None:
        self.value = 0.0
        self.start = start


@dataclass(slots=True)
class _Bound:
    """The series one raw attribute combination feeds (bounded attributes, resolved once)."""

    duration: _Hist
    duration_error: dict[str, _Hist]
    input_tokens: _Hist
    output_tokens: _Hist
    cost: dict[str, _Total]
    attrs: Attributes


class _Aggregates:
    _MAX_CACHED: Final = 4096

    def __init__(self, bounds: LabelBounds) -> None:
        self._bounds = bounds
        self._bound: dict[tuple[Any, ...], _Bound] = {}
        # series by their frozen attributes, in creation order (what the snapshot exports)
        self.duration: dict[tuple[tuple[str, Any], ...], _Hist] = {}
        self.tokens: dict[tuple[tuple[str, Any], ...], _Hist] = {}
        self.cost: dict[tuple[tuple[str, Any], ...], _Total] = {}

    def add(self, record: UsageRecord) -> None:
        key = (record.endpoint, record.model_requested, record.model, record.team)
        b = self._bound.get(key)
        if b is None:
            b = self._bind(key)
        latency = record.latency_ms
        if latency is not None:
            error = error_type(record)
            if error is None:
                b.duration.record(latency / 1000.0)
            else:
                hist = b.duration_error.get(error)
                if hist is None:
                    hist = b.duration_error[error] = self._series(
                        self.duration, {**b.attrs, "error.type": error[:64]}, DURATION_BUCKETS
                    )
                hist.record(latency / 1000.0)
        if record.usage_source != "none":
            b.input_tokens.record(record.input_tokens)
            b.output_tokens.record(record.output_tokens)
        cost = record.cost_usd
        if cost is not None and cost > 0:
            tier = self._bounds.service_tier(record.service_tier)
            total = b.cost.get(tier)
            if total is None:
                attrs = tuple(sorted({**b.attrs, "openai.response.service_tier": tier}.items()))
                total = self.cost.get(attrs)
                if total is None:
                    total = self.cost[attrs] = _Total(time.time_ns())
                b.cost[tier] = total
            total.value += float(cost)

    def _bind(self, key: tuple[Any, ...]) -> _Bound:
        endpoint, requested, model, team = key
        bounds = self._bounds
        attrs: Attributes = {
            "gen_ai.operation.name": operation(bounds.endpoint(endpoint)),
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": bounds.model(requested or model),
            "gen_ai.response.model": bounds.model(model or requested),
            "openai_meter.team": bounds.team(team),
        }
        bound = _Bound(
            duration=self._series(self.duration, attrs, DURATION_BUCKETS),
            duration_error={},
            input_tokens=self._series(
                self.tokens, {**attrs, "gen_ai.token.type": "input"}, TOKEN_BUCKETS
            ),
            output_tokens=self._series(
                self.tokens, {**attrs, "gen_ai.token.type": "output"}, TOKEN_BUCKETS
            ),
            cost={},
            attrs=attrs,
        )
        if len(self._bound) >= self._MAX_CACHED:
            self._bound.clear()  # raw values come from clients: keep the cache bounded
        self._bound[key] = bound
        return bound

    @staticmethod
    def _series(
        into: dict[tuple[tuple[str, Any], ...], _Hist],
        attrs: Attributes,
        buckets: tuple[float, ...],
    ) -> _Hist:
        frozen = tuple(sorted(attrs.items()))
        hist = into.get(frozen)
        if hist is None:
            hist = into[frozen] = _Hist(tuple(float(b) for b in buckets), time.time_ns())
        return hist

    def snapshot(self, now: int) -> list[Metric]:
        """Cumulative data points. Runs on the export thread: each series is copied in one
        GIL-atomic step (a few updates apart from each other at worst, as a Prometheus scrape)."""
        metrics = []
        for name, unit, doc, series in (
            ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.",
             self.tokens),
            ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", self.duration),
        ):  # fmt: skip
            points = []
            for attrs, hist in list(series.items()):
                counts = hist.counts[:]
                count = sum(counts)
                if not count:
                    continue
                points.append(
                    HistogramDataPoint(
                        attributes=dict(attrs),
                        start_time_unix_nano=hist.start,
                        time_unix_nano=now,
                        count=count,
                        sum=hist.sum,
                        bucket_counts=counts,
                        explicit_bounds=hist.bounds,
                        min=hist.min,
                        max=hist.max,
                    )
                )
            if points:
                metrics.append(Metric(name, doc, unit, Histogram(points, _CUMULATIVE)))
        cost = [
            NumberDataPoint(
                attributes=dict(attrs),
                start_time_unix_nano=total.start,
                time_unix_nano=now,
                value=total.value,
            )
            for attrs, total in list(self.cost.items())
        ]
        if cost:
            doc = "Priced spend (the ledger holds the exact decimal amounts)."
            metrics.append(Metric("openai_meter.cost", doc, "USD", Sum(cost, _CUMULATIVE, True)))
        return metrics


# --- the stage -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _CallTrace:
    """Chosen in ``on_request``: this call's span and, when the client sent one, its parent."""

    trace_id: int
    span_id: int
    flags: int
    parent_span_id: int | None


class OtelStage:
    """Continues the trace on the way in; span + metrics from the record on the way out.

    Never raises into a call: the meter guards stages (failures count as
    ``metering_errors_total{stage="stage"}``).
    """

    __slots__ = ("_aggregates", "_export", "_sample_bound", "_server_address", "_traces")

    def __init__(
        self,
        export: OtelExport,
        aggregates: _Aggregates | None,
        *,
        traces: bool,
        server_address: str | None,
        sample_ratio: float = 1.0,
    ) -> None:
        self._export = export
        self._aggregates = aggregates
        self._traces = traces
        self._server_address = server_address
        self._sample_bound = sample_bound(sample_ratio)

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        if self._traces:
            trace = _call_trace(exchange.request_headers, self._sample_bound)
            exchange.extras[_SPAN_KEY] = trace
            exchange.upstream_traceparent = TraceParent(
                trace.trace_id, trace.span_id, trace.flags
            ).header()
        return None

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None:
        if self._traces:
            trace = exchange.extras.pop(_SPAN_KEY, None)
            if not isinstance(trace, _CallTrace):  # refused before this stage ran: still a span
                trace = _call_trace(exchange.request_headers, self._sample_bound)
            if trace.flags & 1:
                self._export.add_span(self._span(exchange, record, trace))
        if self._aggregates is not None:
            self._aggregates.add(record)

    def _span(self, exchange: Exchange, record: UsageRecord, trace: _CallTrace) -> ReadableSpan:
        # The client's tracestate is not parsed here (the SDK's parser logs a warning per invalid
        # header: a client could flood the logs); it crosses to the upstream untouched.
        flags = TraceFlags(trace.flags)
        parent = None
        if trace.parent_span_id is not None:
            parent = SpanContext(trace.trace_id, trace.parent_span_id, True, flags)
        attrs = span_attributes(record, server_address=self._server_address)
        return ReadableSpan(
            name=span_name(exchange.endpoint, record.model_requested or record.model),
            context=SpanContext(trace.trace_id, trace.span_id, False, flags),
            parent=parent,
            resource=self._export.resource,
            attributes=attrs,
            kind=SpanKind.CLIENT,
            status=_ERROR if "error.type" in attrs else _UNSET,
            start_time=unix_ns(record.started_at),
            end_time=unix_ns(record.finished_at),
            instrumentation_scope=SCOPE,
        )


def _random_id(bits: int) -> int:
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


def _call_trace(headers: Mapping[str, str], bound: int) -> _CallTrace:
    """Parent-based sampling, as the SDK's default ``ParentBased(TraceIdRatioBased(ratio))``: a
    client's trace keeps its sampled flag; a new one is sampled when the low 64 bits of its trace
    id fall under ``bound`` (ratio x 2^64), so every service decides alike for one trace."""
    parent = parse_traceparent(headers.get("traceparent"))
    span_id = _random_id(64)
    if parent is None:
        trace_id = _random_id(128)
        sampled = 1 if (trace_id & _LOW_64) < bound else 0
        return _CallTrace(trace_id, span_id, sampled, None)
    return _CallTrace(parent.trace_id, span_id, parent.flags & 1, parent.span_id)


def sample_bound(ratio: float) -> int:
    """``trace_sample_ratio`` as the bound on a trace id's low 64 bits (1.0 -> every trace)."""
    return round(max(0.0, min(1.0, ratio)) * (1 << 64))


# --- export -------------------------------------------------------------------------------------


class OtelExport:
    """The stage, the aggregates and the ``otel-export`` thread for one app."""

    def __init__(
        self,
        settings: OtelSettings,
        bounds: LabelBounds,
        *,
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
        server_address: str | None = None,
    ) -> None:
        self.resource = Resource.create({"service.name": settings.service_name})
        base = settings.endpoint.rstrip("/")
        headers = dict(settings.headers)
        self._span_exporter: SpanExporter | None = None
        self._metric_exporter: MetricExporter | None = None
        if settings.traces:
            self._span_exporter = span_exporter or OTLPSpanExporter(
                endpoint=f"{base}/v1/traces", headers=headers, timeout=settings.timeout_s
            )
        aggregates = None
        if settings.metrics:
            self._metric_exporter = metric_exporter or OTLPMetricExporter(
                endpoint=f"{base}/v1/metrics", headers=headers, timeout=settings.timeout_s
            )
            aggregates = _Aggregates(bounds)
        self._aggregates = aggregates
        self._timeout_ms = settings.timeout_s * 1000
        self._interval_s = settings.metrics_interval_ms / 1000.0
        self._spans: deque[ReadableSpan] = deque()
        self._max_spans = settings.max_queue_size
        self.dropped_spans = 0  # queue full
        self.failed_spans = 0  # the collector did not take them
        self._healthy = True  # the last export succeeded
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self.stage = OtelStage(
            self,
            aggregates,
            traces=settings.traces,
            server_address=server_address,
            sample_ratio=settings.trace_sample_ratio,
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the ``otel-export`` thread (the app does, on start-up: after any fork)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otel-export", daemon=True)
            self._thread.start()

    def add_span(self, span: ReadableSpan) -> None:
        """On the event loop: a bounded append, never a wait."""
        if len(self._spans) >= self._max_spans:
            if not self.dropped_spans:
                log.warning(
                    "OpenTelemetry span queue full (otel.max_queue_size=%d): dropping spans "
                    "until the collector catches up (logged once)",
                    self._max_spans,
                )
            self.dropped_spans += 1
            return
        self._spans.append(span)
        if len(self._spans) >= _SPAN_BATCH:
            self._wake.set()

    def _run(self) -> None:
        next_metrics = time.monotonic() + self._interval_s
        while not self._stop.is_set():
            timeout = min(_SPAN_DELAY_S, max(0.0, next_metrics - time.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                break
            self._healthy = self.export_spans()
            if time.monotonic() >= next_metrics:
                self._healthy = self.export_metrics() and self._healthy
                next_metrics = time.monotonic() + self._interval_s

    def export_spans(self) -> bool:
        """Send the waiting spans, batch by batch; stop at the first failed batch (the exporter
        already retried it until ``otel.timeout_s``; its spans are dropped). True if all went."""
        exporter = self._span_exporter
        if exporter is None:
            return True
        with self._export_lock:
            while self._spans:
                batch: list[ReadableSpan] = []
                while self._spans and len(batch) < _SPAN_BATCH:
                    batch.append(self._spans.popleft())
                try:
                    ok = exporter.export(batch) is SpanExportResult.SUCCESS
                except Exception:
                    log.exception("OpenTelemetry span export raised")
                    ok = False
                if not ok:
                    self.failed_spans += len(batch)
                    return False
        return True

    def export_metrics(self) -> bool:
        exporter, aggregates = self._metric_exporter, self._aggregates
        if exporter is None or aggregates is None:
            return True
        with self._export_lock:
            metrics = aggregates.snapshot(time.time_ns())
            if not metrics:
                return True
            data = MetricsData(
                [ResourceMetrics(self.resource, [ScopeMetrics(SCOPE, metrics, "")], "")]
            )
            try:
                result = exporter.export(data, timeout_millis=self._timeout_ms)
            except Exception:
                log.exception("OpenTelemetry metric export raised")
                return False
            return result is MetricExportResult.SUCCESS

    def flush(self) -> bool:
        """Export everything now (blocking: off the event loop). True if the collector took it."""
        spans_ok = self.export_spans()
        self._healthy = self.export_metrics() and spans_ok
        return self._healthy

    def shutdown(self) -> None:
        """Stop the thread, export what is left, close the exporters (blocking: off the loop).

        Bounded: the thread's export in progress (at most ``otel.timeout_s`` per attempt), then a
        last flush only if the collector answered the last export - a collector that is down does
        not hold the process's exit for more than about ``otel.timeout_s``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self._healthy:
            self.flush()
        for exporter in (self._span_exporter, self._metric_exporter):
            if exporter is not None:
                try:
                    exporter.shutdown()
                except Exception:
                    log.exception("OpenTelemetry exporter shutdown failed")


__all__ = [
    "OtelExport",
    "OtelStage",
    "TraceParent",
    "error_type",
    "parse_traceparent",
    "sample_bound",
    "span_attributes",
    "span_name",
    "unix_ns",
]
