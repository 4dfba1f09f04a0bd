"""What OpenTelemetry export (``otel.enabled``) costs per call, in process.

Same per-call work as ``bench.meter_bench`` (forwarder's pure work + the meter's hooks, wired like
``create_app``), with and without the OTel stage first in the stages, as ``create_app`` puts it:

* ``on the call``: the trace context chosen in ``on_request`` (from the client's ``traceparent``
  when it sent one: ``..._traced``), the finished span built and queued in ``on_record``, and the
  metric aggregates updated. The export thread is not started, so this is exactly the work done on
  the event loop's thread.
* ``export, per span`` / ``per metrics export``: what the ``otel-export`` thread then spends to
  encode spans and a metrics snapshot to OTLP protobuf (it shares the GIL with the loop; the HTTP
  POST itself is I/O).
* ``sdk_tracer_and_meter``: the same span and metrics through the SDK's ``Tracer`` and ``Meter``,
  for comparison (why ``proxy.observe.otel`` does not use them on the call path).

``python -m bench.otel_bench``; microseconds per call, lower is better.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bench.meter_bench import REQUEST_HEADERS, _per_call_us, _run_sync, call, product_meter
from pricing.book import PriceBook
from proxy.http.exchange import Exchange
from proxy.observe.metrics import LabelBounds
from proxy.observe.otel import OtelExport, span_attributes, span_name, unix_ns
from proxy.settings import OtelSettings
from storage.record import UsageRecord

TRACED_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            **REQUEST_HEADERS,
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        }
    )
)


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Keep(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.last: MetricsData | None = None

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: object
    ) -> MetricExportResult:
        self.last = metrics_data
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: object) -> None:
        return None


def _export(spans: SpanExporter, metrics: MetricExporter | None = None) -> OtelExport:
    book = PriceBook.load()
    return OtelExport(
        OtelSettings(enabled=True, max_queue_size=10_000_000),
        LabelBounds(book.models(), ()),
        span_exporter=spans,
        metric_exporter=metrics or _Keep(),
        server_address="api.openai.com",
        # not started: nothing exports while we time the call path
    )


def _encode_us(batch: int = 512, rounds: int = 20) -> tuple[float, float]:
    """(per span, per metrics snapshot) encode + serialise, as the export thread does."""
    memory, kept = InMemorySpanExporter(), _Keep()
    export = _export(memory, kept)
    one = call(product_meter([export.stage]), stream=False)
    for _ in range(batch):
        one()
    export.flush()
    spans = memory.get_finished_spans()[:batch]
    per_span = per_snapshot = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        encode_spans(spans).SerializeToString()
        per_span = min(per_span, (time.perf_counter() - started) / len(spans))
        started = time.perf_counter()
        export.export_metrics()
        assert kept.last is not None
        encode_metrics(kept.last).SerializeToString()
        per_snapshot = min(per_snapshot, time.perf_counter() - started)
    export.shutdown()
    return per_span * 1e6, per_snapshot * 1e6


def _sample_record() -> UsageRecord:
    now = datetime.now(UTC)
    return UsageRecord(
        id="r", started_at=now, finished_at=now, method="POST",
        path="/v1/chat/completions", endpoint="chat.completions", status_code=200, outcome="ok",
        model_requested="gpt-4o-mini", model="gpt-4o-mini-2024-07-18", team="search",
        input_tokens=100, output_tokens=20, usage_source="reported",
        cost_usd=Decimal("0.0000228"), latency_ms=150.0,
    )  # fmt: skip


def _sdk_stage_us() -> float:
    """The same span + metrics through the SDK's Tracer and Meter (what we do not do)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=10_000_000))
    tracer = tracer_provider.get_tracer("bench")
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    tokens = meter.create_histogram("gen_ai.client.token.usage")
    duration = meter.create_histogram("gen_ai.client.operation.duration")
    cost = meter.create_counter("openai_meter.cost")
    propagator = TraceContextTextMapPropagator()
    ex = Exchange("POST", "/v1/chat/completions", "", "chat.completions", TRACED_HEADERS)
    ex.model_requested = "gpt-4o-mini"
    rec = _sample_record()
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "openai_meter.team": "search",
    }

    def one() -> None:
        span = tracer.start_span(
            span_name(ex.endpoint, ex.model_requested),
            context=propagator.extract(ex.request_headers),
            kind=SpanKind.CLIENT,
            start_time=unix_ns(ex.started_at),
        )
        span.set_attributes(span_attributes(rec))
        span.end(end_time=unix_ns(rec.finished_at))
        duration.record(0.15, attrs)
        tokens.record(100, {**attrs, "gen_ai.token.type": "input"})
        tokens.record(20, {**attrs, "gen_ai.token.type": "output"})
        cost.add(0.0000228, attrs)

    try:
        return _per_call_us(one, 2000)
    finally:
        tracer_provider.shutdown()


def _interleaved(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    rounds: int,
    between: Callable[[], object] = lambda: None,
) -> dict[str, float]:
    """Best per-call time of each, rounds interleaved so a noisy neighbour hits all alike.
    ``between`` runs untimed after each measurement (here: the export thread's drain, which in
    the product runs every second; without it the span queue would grow for the whole bench)."""
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        for _ in range(200):
            fn()  # warm caches (label children, price quotes, metric series)
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            for _ in range(repeat):
                fn()
            best[name] = min(best[name], (time.perf_counter() - started) / repeat)
            between()
    return {name: value * 1e6 for name, value in best.items()}


def _stage_only_us(traced: bool) -> float:
    """The OTel stage alone: ``on_request`` + ``on_record`` for one call (no meter around it)."""
    export = _export(_Drop())
    stage = export.stage
    headers = TRACED_HEADERS if traced else REQUEST_HEADERS
    rec = _sample_record()

    def one() -> None:
        ex = Exchange("POST", "/v1/chat/completions", "", "chat.completions", headers)
        ex.model_requested = "gpt-4o-mini"
        _run_sync(stage.on_request(ex))
        stage.on_record(ex, rec)

    try:
        return _per_call_us(one, 5000)
    finally:
        export.shutdown()


def run() -> dict[str, float]:
    off = product_meter()
    export = _export(_Drop())
    on = product_meter([export.stage])
    results = {"calibration_empty_call_us": _per_call_us(lambda: None, 100_000)}
    results.update(
        _interleaved(
            {
                "otel_off_json_call_us": call(off, stream=False),
                "otel_on_json_call_us": call(on, stream=False),
                # the client sends a traceparent: parsed, continued
                "otel_on_json_call_traced_us": call(
                    on, stream=False, request_headers=TRACED_HEADERS
                ),
                "otel_off_sse_call_us": call(off, stream=True),
                "otel_on_sse_call_us": call(on, stream=True),
            },
            repeat=1000,
            rounds=9,
            between=export.flush,
        )
    )
    export.shutdown()
    per_span, per_snapshot = _encode_us()
    results["otel_export_encode_per_span_us"] = per_span
    results["otel_export_encode_per_metrics_snapshot_us"] = per_snapshot
    results["otel_stage_only_per_call_us"] = _stage_only_us(traced=False)
    results["otel_stage_only_per_call_traced_us"] = _stage_only_us(traced=True)
    results["sdk_tracer_and_meter_per_call_us"] = _sdk_stage_us()
    return results


def main() -> None:
    for key, value in run().items():
        print(f"{key:40s} {value:10.3f}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
