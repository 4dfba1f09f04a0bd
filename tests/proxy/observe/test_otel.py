"""proxy/observe/otel.py with the real SDK and in-memory exporters: trace continuation, span
attributes (never secrets), GenAI metrics with bounded attributes. The OTLP/HTTP wire is covered by
tests/e2e/test_otel_product.py against a local receiver."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from proxy.http.exchange import Exchange
from proxy.observe.metrics import LabelBounds
from proxy.observe.otel import (
    OtelExport,
    parse_traceparent,
    sample_bound,
    span_attributes,
    span_name,
    unix_ns,
)
from proxy.settings import OtelSettings
from tests.proxy.observe.test_metrics import record

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
VALID = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
# Flags: bit 0 sampled, bit 1 "random trace id" (W3C Trace Context level 2; the SDK sets it).
W3C = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]")


class CapturedMetrics(MetricExporter):
    """Keeps what the export thread would send (the OTLP encoding is covered end to end)."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any) -> Any:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        return None


class Export:
    def __init__(self, **settings: Any) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = CapturedMetrics()
        self.export = OtelExport(
            OtelSettings(enabled=True, **settings),
            LabelBounds(["gpt-4o-mini"], ["search"]),
            span_exporter=self.spans,
            metric_exporter=self.metrics,
            server_address="api.openai.com",
            # not started: the tests flush; the thread is exercised below and end to end
        )
        self.stage = self.export.stage

    def finished(self) -> list[ReadableSpan]:
        self.export.flush()
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        self.export.flush()
        if not self.metrics.exports:
            return []
        out = []
        for rm in self.metrics.exports[-1].resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
        return out


@pytest.fixture
def otel() -> Iterator[Export]:
    export = Export()
    yield export
    export.export.shutdown()


def exchange(headers: list[tuple[str, str]] | None = None, **kwargs: Any) -> Exchange:
    kwargs.setdefault("model_requested", "gpt-4o-mini")
    return Exchange(
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        endpoint="chat.completions",
        request_headers=CIMultiDictProxy(CIMultiDict(headers or [])),
        **kwargs,
    )


async def test_a_call_continues_the_clients_trace_and_passes_the_proxy_span_upstream(
    otel: Export,
) -> None:
    ex = exchange([("Traceparent", VALID), ("tracestate", "vendor=1")])
    assert await otel.stage.on_request(ex) is None
    upstream = ex.upstream_traceparent
    assert upstream is not None and W3C.fullmatch(upstream)
    _, trace_id, parent_id, flags = upstream.split("-")
    assert trace_id == CLIENT_TRACE and parent_id != CLIENT_SPAN and flags == "01"
    rec = record(started_at=ex.started_at, finished_at=ex.started_at + timedelta(seconds=1))
    otel.stage.on_record(ex, rec)
    (span,) = otel.finished()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "chat gpt-4o-mini"
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE
    assert format(span.context.span_id, "016x") == parent_id  # upstream's parent = our span
    assert span.parent is not None and format(span.parent.span_id, "016x") == CLIENT_SPAN
    assert span.parent.is_remote
    assert span.start_time == unix_ns(ex.started_at)
    assert span.end_time == unix_ns(rec.finished_at)
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 100
    assert attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 40
    assert attrs["openai_meter.cost_usd"] == "0.0000228"
    assert attrs["openai_meter.team"] == "search"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["server.address"] == "api.openai.com"
    assert span.status.status_code is StatusCode.UNSET


async def test_no_traceparent_starts_a_new_trace_and_still_propagates(otel: Export) -> None:
    ex = exchange()
    await otel.stage.on_request(ex)
    assert ex.upstream_traceparent is not None and W3C.fullmatch(ex.upstream_traceparent)
    otel.stage.on_record(ex, record())
    (span,) = otel.finished()
    assert span.parent is None


async def test_an_unsampled_client_trace_is_propagated_but_not_exported(otel: Export) -> None:
    ex = exchange([("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00")])
    await otel.stage.on_request(ex)
    assert ex.upstream_traceparent is not None
    assert ex.upstream_traceparent.startswith(f"00-{CLIENT_TRACE}-")
    assert ex.upstream_traceparent.endswith("-00")
    otel.stage.on_record(ex, record())
    assert otel.finished() == []
    assert otel.points("gen_ai.client.token.usage")  # metrics do not depend on sampling


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        st.text(max_size=200),
        st.from_regex(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", fullmatch=True),
        st.sampled_from(
            [
                "",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
                f"00-{CLIENT_TRACE}-0000000000000000-01",  # zero span id
                f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",  # forbidden version
                f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01",  # upper case
                f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra",  # version 00 takes no suffix
                VALID + " " * 10_000,
                "00-" + "a" * 100_000,
            ]
        ),
    )
)
async def test_any_traceparent_yields_a_valid_one_upstream(
    header: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    otel = Export()
    try:
        ex = exchange([("traceparent", header)])
        await otel.stage.on_request(ex)
        upstream = ex.upstream_traceparent
        assert upstream is not None and W3C.fullmatch(upstream), upstream
        valid = bool(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", header.strip()))
        zero = "0" * 16 in header or "0" * 32 in header
        if valid and not zero and not header.startswith("ff") and len(header) <= 512:
            assert upstream.split("-")[1] == header.strip().split("-")[1]
        otel.stage.on_record(ex, record())
        assert not caplog.records  # a client's header never writes a log line
    finally:
        otel.export.shutdown()


async def test_a_call_refused_before_the_stage_ran_still_gets_one_span(otel: Export) -> None:
    ex = exchange([("traceparent", VALID)])
    otel.stage.on_record(ex, record(status_code=429, outcome="refused", usage_source="none"))
    (span,) = otel.finished()
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "refused"


SECRET = "SECRET-"


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(min_size=1, max_size=50),
    key=st.text(min_size=1, max_size=50),
    tag=st.text(min_size=1, max_size=50),
    project=st.text(min_size=1, max_size=50),
    model=st.text(max_size=2000),
    cost=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=9)),
    tokens=st.integers(min_value=0, max_value=2**62),
)
def test_span_attributes_never_carry_identity_or_tags(
    user: str, key: str, tag: str, project: str, model: str, cost: Decimal | None, tokens: int
) -> None:
    rec = record(
        user=SECRET + user,
        key_fingerprint=SECRET + key,
        tags={SECRET + "k": SECRET + tag},
        project=SECRET + project,
        model=model or None,
        model_requested=model or None,
        cost_usd=cost,
        input_tokens=tokens,
    )
    attrs = span_attributes(rec)
    for name, value in attrs.items():
        assert SECRET not in name
        assert not (isinstance(value, str) and SECRET in value and SECRET not in model), name
        if isinstance(value, str):
            assert len(value) <= 256
    assert attrs["gen_ai.usage.input_tokens"] == tokens
    if cost is None:
        assert attrs["openai_meter.unpriced"] is True
    else:
        assert Decimal(str(attrs["openai_meter.cost_usd"])) == cost  # exact


def test_span_names_and_times() -> None:
    assert span_name("embeddings", "text-embedding-3-small") == "embeddings text-embedding-3-small"
    assert span_name("files", None) == "files"
    assert len(span_name("responses", "m" * 10_000)) < 200
    moment = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    assert unix_ns(moment) == 1_795_953_600_123_456_000
    assert unix_ns(moment) % 1000 == 0


def test_metrics_follow_the_genai_conventions_with_bounded_attributes(otel: Export) -> None:
    ex = exchange()
    otel.stage.on_record(ex, record())
    otel.stage.on_record(ex, record(model="brand-new-model", model_requested="x" * 5000))
    otel.stage.on_record(ex, record(team="nobody-configured", cost_usd=None))
    otel.stage.on_record(ex, record(status_code=500, outcome="upstream_error", latency_ms=20.0))
    tokens = otel.points("gen_ai.client.token.usage")
    models = {a["gen_ai.request.model"] for a, _ in tokens}
    assert models == {"gpt-4o-mini", "other"}
    assert {a["openai_meter.team"] for a, _ in tokens} == {"search", "unassigned"}
    assert {a["gen_ai.token.type"] for a, _ in tokens} == {"input", "output"}
    assert {a["gen_ai.provider.name"] for a, _ in tokens} == {"openai"}
    assert {a["gen_ai.operation.name"] for a, _ in tokens} == {"chat"}
    assert sum(p.sum for a, p in tokens if a["gen_ai.token.type"] == "input") == 400
    durations = otel.points("gen_ai.client.operation.duration")
    assert sum(p.count for _, p in durations) == 4
    assert {a.get("error.type") for a, _ in durations} == {None, "500"}
    assert list(durations[0][1].explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    cost = otel.points("openai_meter.cost")
    assert sum(p.value for _, p in cost) == pytest.approx(3 * 0.0000228)


async def test_traces_or_metrics_can_be_turned_off() -> None:
    only_metrics = Export(traces=False)
    ex = exchange([("traceparent", VALID)])
    await only_metrics.stage.on_request(ex)
    assert ex.upstream_traceparent is None  # the client's header crosses untouched
    only_metrics.stage.on_record(ex, record())
    assert only_metrics.finished() == [] and only_metrics.points("gen_ai.client.token.usage")
    only_traces = Export(metrics=False)
    ex = exchange([("traceparent", VALID)])
    await only_traces.stage.on_request(ex)
    only_traces.stage.on_record(ex, record())
    assert len(only_traces.finished()) == 1 and only_traces.metrics.exports == []


def test_traceparent_parsing_follows_the_w3c_rules() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed is not None and parsed.header() == VALID and parsed.sampled
    assert parse_traceparent(f" {VALID}\t") == parsed  # optional white space around
    future = parse_traceparent(f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-01-more-fields")
    assert future is not None and future.trace_id == parsed.trace_id  # later versions: prefix
    for bad in (
        None,
        "",
        f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-more",
        f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        f"00-{'0' * 32}-{CLIENT_SPAN}-01",
        f"00-{CLIENT_TRACE}-{'0' * 16}-01",
        f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01",
        f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-1",
        VALID + "-" + "x" * 600,
        "00-٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠١-b7ad6b7169203331-01",  # non-ASCII digits
    ):
        assert parse_traceparent(bad) is None, bad


def test_a_full_span_queue_drops_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    otel = Export(max_queue_size=3)
    for _ in range(10):
        otel.stage.on_record(exchange(), record())
    assert otel.export.dropped_spans == 7
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    assert len(otel.finished()) == 3


def test_the_export_thread_sends_spans_and_metrics_and_shutdown_sends_the_rest() -> None:
    spans, metrics = InMemorySpanExporter(), CapturedMetrics()
    export = OtelExport(
        OtelSettings(enabled=True, metrics_interval_ms=50),
        LabelBounds(["gpt-4o-mini"], ["search"]),
        span_exporter=spans,
        metric_exporter=metrics,
    )
    export.start()
    for _ in range(600):  # more than a batch: wakes the thread before its 1 s delay
        export.stage.on_record(exchange(), record())
    deadline = time.monotonic() + 30
    while (len(spans.get_finished_spans()) < 512 or not metrics.exports) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    export.stage.on_record(exchange(), record())
    export.shutdown()
    assert len(spans.get_finished_spans()) == 601
    assert metrics.exports


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "model": st.sampled_from(["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "x", None]),
                "team": st.sampled_from(["search", "other-team", "unassigned"]),
                "input_tokens": st.integers(min_value=0, max_value=10**9),
                "output_tokens": st.integers(min_value=0, max_value=10**9),
                "usage_source": st.sampled_from(["reported", "estimated", "none"]),
                "cost_usd": st.one_of(
                    st.none(), st.decimals(min_value=0, max_value=1000, places=6)
                ),
                "latency_ms": st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
                "status_code": st.sampled_from([200, 400, 429, 500, None]),
            }
        ),
        max_size=60,
    )
)
def test_metric_totals_equal_the_records_whatever_they_hold(values: list[dict[str, Any]]) -> None:
    otel = Export(traces=False)
    records = [record(id=str(i), **v) for i, v in enumerate(values)]
    for rec in records:
        otel.stage.on_record(exchange(), rec)
    tokens = otel.points("gen_ai.client.token.usage")
    metered = [r for r in records if r.usage_source != "none"]
    for kind, column in (("input", "input_tokens"), ("output", "output_tokens")):
        points = [p for a, p in tokens if a["gen_ai.token.type"] == kind]
        assert sum(p.sum for p in points) == sum(getattr(r, column) for r in metered)
        assert sum(p.count for p in points) == len(metered)
        for p in points:
            assert sum(p.bucket_counts) == p.count
            assert len(p.bucket_counts) == len(p.explicit_bounds) + 1
    durations = otel.points("gen_ai.client.operation.duration")
    assert sum(p.count for _, p in durations) == sum(r.latency_ms is not None for r in records)
    cost = sum(p.value for _, p in otel.points("openai_meter.cost"))
    assert cost == pytest.approx(float(sum(r.cost_usd or 0 for r in records)))
    for attrs, _ in [*tokens, *durations]:
        assert attrs["gen_ai.request.model"] in {"gpt-4o-mini", "other"}
        assert attrs["openai_meter.team"] in {"search", "unassigned"}


def test_a_snapshot_from_the_export_thread_while_the_loop_adds_is_consistent() -> None:
    otel = Export(traces=False)
    stop = threading.Event()
    snapshots: list[Any] = []

    def export_thread() -> None:
        while not stop.is_set():
            otel.export.export_metrics()
            snapshots.append(otel.metrics.exports[-1] if otel.metrics.exports else None)

    thread = threading.Thread(target=export_thread)
    thread.start()
    try:
        for i in range(20_000):
            otel.stage.on_record(exchange(), record(id=str(i)))
    finally:
        stop.set()
        thread.join()
    assert len(snapshots) > 1
    (points,) = [
        p for a, p in otel.points("gen_ai.client.token.usage") if a["gen_ai.token.type"] == "input"
    ]
    assert points.count == 20_000 and points.sum == 20_000 * 100
    for data in filter(None, snapshots):
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "openai_meter.cost":
                        for p in metric.data.data_points:
                            assert sum(p.bucket_counts) == p.count  # counts copied in one step


@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0])
async def test_new_traces_are_sampled_by_ratio_and_client_traces_by_their_flag(
    ratio: float,
) -> None:
    otel = Export(trace_sample_ratio=ratio)
    bound = sample_bound(ratio)
    upstream: list[str] = []
    for _ in range(400):
        ex = exchange()
        await otel.stage.on_request(ex)
        assert ex.upstream_traceparent is not None
        upstream.append(ex.upstream_traceparent)
        otel.stage.on_record(ex, record())
    spans = otel.finished()
    # the decision is the trace id's, as the SDK's TraceIdRatioBased makes it
    exported = {format(s.context.trace_id, "032x") for s in spans}
    for header in upstream:
        trace_hex, flags = header.split("-")[1], header.split("-")[3]
        sampled = int(trace_hex, 16) & ((1 << 64) - 1) < bound
        assert (flags == "01") == sampled
        assert (trace_hex in exported) == sampled
    if ratio == 0.0:
        assert spans == []
    elif ratio == 1.0:
        assert len(spans) == 400
    else:
        assert 40 < len(spans) < 160  # 100 expected; a fair coin is far inside this
    ex = exchange([("traceparent", VALID)])  # the client sampled it: exported whatever the ratio
    await otel.stage.on_request(ex)
    otel.stage.on_record(ex, record())
    assert [format(s.context.trace_id, "032x") for s in otel.finished()][-1] == CLIENT_TRACE


def test_sample_bound_covers_the_whole_range() -> None:
    assert sample_bound(0.0) == 0
    assert sample_bound(1.0) == 1 << 64  # every 64-bit value is below it
    assert sample_bound(0.5) == 1 << 63


async def test_a_hostile_tracestate_writes_no_log_and_breaks_nothing(
    otel: Export, caplog: pytest.LogCaptureFixture
) -> None:
    for state in ("=" * 10_000, "a=b," * 1000, "\x00\x01", "k=v\r\nInjected: 1", "é=ü"):
        ex = exchange([("traceparent", VALID), ("tracestate", state)])
        await otel.stage.on_request(ex)
        otel.stage.on_record(ex, record())
    assert len(otel.finished()) == 5
    assert not caplog.records


class _Refusing(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        return SpanExportResult.FAILURE


def test_a_collector_that_refuses_is_tried_once_per_round_and_never_holds_shutdown() -> None:
    refusing = _Refusing()
    export = OtelExport(
        OtelSettings(enabled=True, metrics=False),
        LabelBounds(["gpt-4o-mini"], ["search"]),
        span_exporter=refusing,
    )
    for _ in range(2000):  # four batches waiting
        export.stage.on_record(exchange(), record())
    assert export.flush() is False
    assert refusing.calls == 1 and export.failed_spans == 512  # stopped at the first failure
    export.shutdown()
    assert refusing.calls == 1  # no last flush into a collector that just refused
