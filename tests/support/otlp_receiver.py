"""A local OTLP/HTTP receiver (a collector's front door) that decodes what arrives.

    async with OtlpReceiver() as otlp:          # listens on 127.0.0.1, a free port
        settings: otel.endpoint = otlp.url
        ...
        otlp.spans        # decoded protobuf Spans, with their resource attributes
        otlp.points("gen_ai.client.token.usage")  # (attributes, data point) of a metric

Decoding uses ``opentelemetry-proto`` (the protobuf messages the OTLP spec defines), so what is
checked is what a real collector would read. ``fail_next(n)`` answers 503 n times (a collector
that is down, then back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from multidict import CIMultiDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.loopback import serve_on_loopback


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = value_of(kv.value)
    return out


@dataclass
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]
    scope: str

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: list[tuple[dict[str, Any], Metric]] = field(default_factory=list)
    requests: list[tuple[str, CIMultiDict[str]]] = field(default_factory=list)  # path, headers
    raw: list[bytes] = field(default_factory=list)  # every accepted body, as it arrived
    _failures: int = 0
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, times: int) -> None:
        self._failures = times

    async def start(self) -> OtlpReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = await serve_on_loopback(self._runner)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OtlpReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _body(self, request: web.Request) -> bytes | web.Response:
        self.requests.append((request.path, CIMultiDict(request.headers)))
        if self._failures > 0:
            self._failures -= 1
            return web.Response(status=503)
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        body = await request.read()
        self.raw.append(body)
        return body

    async def _traces(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except DecodeError:
            return web.Response(status=400)
        for rs in message.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append(ReceivedSpan(span, resource, ss.scope.name))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        message = ExportMetricsServiceRequest()
        try:
            message.ParseFromString(body)
        except DecodeError:
            return web.Response(status=400)
        for rm in message.resource_metrics:
            resource = attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self.metrics.append((resource, metric))
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def latest(self, name: str) -> Metric | None:
        """The last export of metric ``name`` (cumulative temporality: the running totals)."""
        found = [m for _, m in self.metrics if m.name == name]
        return found[-1] if found else None

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of the latest export of ``name``."""
        metric = self.latest(name)
        if metric is None:
            return []
        kind = metric.WhichOneof("data")
        data = getattr(metric, kind)
        return [(attributes(p.attributes), p) for p in data.data_points]
