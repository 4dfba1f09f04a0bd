"""OpenTelemetry export (the ``otel`` extra; ``otel.enabled``, off by default).

One :class:`OtelStage` per app, a :class:`proxy.http.exchange.RequestStage` next to the metrics
stage:

* ``on_request`` continues the client's W3C ``traceparent`` (a new trace when it sent none or a
  malformed one): it starts one CLIENT span for the call and sets ``exchange.upstream_traceparent``
  so the upstream sees the proxy's span as the parent (the edge replaces the header; it never
  imports this module). The client's ``tracestate`` passes through unchanged.
* ``on_record`` - after the response went to the client, when the finished record is there, the
  same moment Prometheus metrics are updated - sets the span's attributes from the record, ends it,
  and records the GenAI metrics.

Export runs in the SDK's own background threads (``BatchSpanProcessor``,
``PeriodicExportingMetricReader``) over OTLP/HTTP: ending a span appends it to a bounded queue
(full -> dropped, never waited for), and a metric update is an in-memory aggregation. Nothing here
touches the network on a call.

Names follow the OpenTelemetry GenAI semantic conventions (client spans and metrics):
``gen_ai.client.token.usage`` ({token}, histogram, ``gen_ai.token.type`` input/output),
``gen_ai.client.operation.duration`` (s, histogram) and, with no convention for money,
``openai_meter.cost`` (USD, counter; float at this edge as in Prometheus, the ledger stays exact).
Metric attributes are bounded like the Prometheus labels (:class:`~proxy.observe.metrics.LabelBounds`:
catalog models + ``other``, configured teams + ``unassigned``). Span attributes carry the model,
tokens, cost (the exact decimal as a string), team, endpoint, status and the ledger record id -
never a body, a key, a key fingerprint, a user or tags.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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

SCOPE: Final = "openai-meter"
_SPAN_KEY: Final = "otel.span"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NS: Final = timedelta(microseconds=1)
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_MAX_TRACEPARENT: Final = 512  # the SDK propagator's own limit

Attributes = dict[str, str | bool | int | float]


def unix_ns(moment: datetime) -> int:
    """A timezone-aware datetime as integer nanoseconds since the epoch (exact to the microsecond)."""
    return ((moment - _EPOCH) // _NS) * 1000


def operation(endpoint: str) -> str:
    return GENAI_OPERATIONS.get(endpoint, endpoint)


def traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` naming ``span`` as the parent (None for an invalid context)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def span_name(endpoint: str, model: str | None) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}`` (semconv), bounded in length."""
    name = operation(endpoint)
    return f"{name} {model[:128]}" if model else name


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


class OtelExport:
    """The SDK pieces for one app: providers (never the global ones), instruments, the stage."""

    def __init__(
        self,
        settings: OtelSettings,
        bounds: LabelBounds,
        *,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        server_address: str | None = None,
    ) -> None:
        resource = Resource.create({"service.name": settings.service_name})
        base = settings.endpoint.rstrip("/")
        headers = dict(settings.headers)
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        tracer: Tracer | None = None
        instruments: _Instruments | None = None
        if settings.traces:
            exporter = span_exporter or OTLPSpanExporter(
                endpoint=f"{base}/v1/traces", headers=headers, timeout=settings.timeout_s
            )
            self.tracer_provider = TracerProvider(resource=resource)
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    exporter,
                    max_queue_size=settings.max_queue_size,
                    max_export_batch_size=min(512, settings.max_queue_size),
                    export_timeout_millis=settings.timeout_s * 1000,
                )
            )
            tracer = self.tracer_provider.get_tracer(SCOPE)
        if settings.metrics:
            reader = metric_reader or PeriodicExportingMetricReader(
                OTLPMetricExporter(
                    endpoint=f"{base}/v1/metrics", headers=headers, timeout=settings.timeout_s
                ),
                export_interval_millis=settings.metrics_interval_ms,
                export_timeout_millis=settings.timeout_s * 1000,
            )
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            instruments = _Instruments(self.meter_provider)
        self.stage = OtelStage(tracer, instruments, bounds, server_address=server_address)

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: call it off the event loop)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    log.exception("OpenTelemetry shutdown failed (spans or metrics may be lost)")


class _Instruments:
    __slots__ = ("cost", "duration", "tokens")

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter(SCOPE)
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost: Counter = meter.create_counter(
            "openai_meter.cost",
            unit="USD",
            description="Priced spend (the ledger holds the exact decimal amounts).",
        )


class OtelStage:
    """Continues the trace on the way in; span + metrics from the record on the way out.

    Never raises into a call: the meter guards stages, and failures here are counted as
    ``metering_errors_total{stage="stage"}`` like any stage's.
    """

    __slots__ = ("_bounds", "_instruments", "_server_address", "_tracer")

    def __init__(
        self,
        tracer: Tracer | None,
        instruments: _Instruments | None,
        bounds: LabelBounds,
        *,
        server_address: str | None = None,
    ) -> None:
        self._tracer = tracer
        self._instruments = instruments
        self._bounds = bounds
        self._server_address = server_address

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        if self._tracer is not None:
            span = self._start(exchange)
            exchange.extras[_SPAN_KEY] = span
            exchange.upstream_traceparent = traceparent(span)
        return None

    def _start(self, exchange: Exchange) -> Span:
        assert self._tracer is not None
        return self._tracer.start_span(
            span_name(exchange.endpoint, exchange.model_requested),
            context=parent_context(exchange.request_headers),
            kind=SpanKind.CLIENT,
            start_time=unix_ns(exchange.started_at),
        )

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None:
        if self._tracer is not None:
            span = exchange.extras.pop(_SPAN_KEY, None)
            if not isinstance(span, Span):  # refused before this stage ran: still one span
                span = self._start(exchange)
            if span.is_recording():
                span.set_attributes(span_attributes(record, server_address=self._server_address))
                if error_type(record) is not None:
                    span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=unix_ns(record.finished_at))
        if self._instruments is not None:
            self._record_metrics(record)

    def _record_metrics(self, record: UsageRecord) -> None:
        instruments = self._instruments
        assert instruments is not None
        bounds = self._bounds
        attrs: Attributes = {
            "gen_ai.operation.name": operation(bounds.endpoint(record.endpoint)),
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": bounds.model(record.model_requested or record.model),
            "gen_ai.response.model": bounds.model(record.model or record.model_requested),
            "openai_meter.team": bounds.team(record.team),
        }
        error = error_type(record)
        if record.latency_ms is not None:
            duration_attrs = attrs if error is None else {**attrs, "error.type": error}
            instruments.duration.record(record.latency_ms / 1000.0, duration_attrs)
        if record.usage_source != "none":
            instruments.tokens.record(record.input_tokens, {**attrs, "gen_ai.token.type": "input"})
            instruments.tokens.record(
                record.output_tokens, {**attrs, "gen_ai.token.type": "output"}
            )
        if record.cost_usd is not None and record.cost_usd > 0:
            tier = bounds.service_tier(record.service_tier)
            instruments.cost.add(
                float(record.cost_usd), {**attrs, "openai.response.service_tier": tier}
            )


def parent_context(headers: Mapping[str, str]) -> Context | None:
    """The client's trace context from ``traceparent`` / ``tracestate``; None starts a new trace
    (no header, or one the W3C rules reject: a new trace, never an error)."""
    value = headers.get("traceparent")
    if value is None or len(value) > _MAX_TRACEPARENT:
        return None  # (the SDK would log a warning per call for an oversized one: a log flood)
    return _PROPAGATOR.extract(headers)


__all__ = [
    "OtelExport",
    "OtelStage",
    "error_type",
    "parent_context",
    "span_attributes",
    "span_name",
    "traceparent",
    "unix_ns",
]
