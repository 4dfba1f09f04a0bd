"""OpenTelemetry export end to end: the official SDK as the client (sending a W3C traceparent), the
whole product, the fake upstream, and a local OTLP/HTTP receiver that decodes what arrives with
``opentelemetry-proto``. Shown: the client's trace continued and passed upstream, one span per
call with model/tokens/cost/team, the GenAI metrics equal to the ledger, no key or body anywhere in
what is exported, and a collector that is down costs the calls nothing."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proxy.app import StartupError, create_app
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.product import Product, product_settings, share_encodings

API_KEY = "sk-test-otel-SECRET-KEY-0123456789"
PROMPT = "the body text SECRET-PROMPT must never be exported"
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as receiver:
        yield receiver


def _otel(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "endpoint": endpoint,
        "metrics_interval_ms": 100_000,  # exported at shutdown (the test stops the product first)
        "headers": {"authorization": "Bearer collector-token"},
        "timeout_s": 2.0,
        **extra,
    }


async def test_spans_continue_the_client_trace_and_metrics_equal_the_ledger(
    fake_upstream: FakeUpstream, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    product = Product(
        fake_upstream.url,
        tmp_path,
        otel=_otel(otlp.url),
        teams={"search": {"keys": [], "projects": ["proj_search"]}},
    )
    async with product:
        client = product.sdk(API_KEY)
        traced = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "acme=1"}
        team = {"OpenAI-Project": "proj_search"}
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={**traced, **team}
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=traced
        )
        async for _ in stream:
            pass
        await client.responses.create(model="gpt-4o-mini", input=PROMPT)  # no traceparent
        await client.embeddings.create(model="text-embedding-3-small", input=PROMPT)
    rows = await product.rows()
    assert len(rows) == 4

    # upstream saw the proxy's span as the parent, in the client's trace, with its tracestate
    seen = [r.headers for r in fake_upstream.requests]
    upstream_parents = [h["traceparent"] for h in seen if h.get("tracestate") == "acme=1"]
    assert len(upstream_parents) == 2
    assert all(tp.startswith(f"00-{CLIENT_TRACE}-") for tp in upstream_parents)
    assert all(len(h.getall("traceparent")) == 1 for h in seen)
    untraced = [h["traceparent"] for h in seen if "tracestate" not in h]
    assert len(untraced) == 2 and not any(CLIENT_TRACE in tp for tp in untraced)

    # one span per call, exported over OTLP/HTTP with the configured headers
    spans = {s.attributes["openai_meter.record_id"]: s for s in otlp.spans}
    assert set(spans) == {r["id"] for r in rows}
    assert {s.resource["service.name"] for s in otlp.spans} == {"openai-meter"}
    assert all(h.get("authorization") == "Bearer collector-token" for _, h in otlp.requests)
    traced_spans = [s for s in otlp.spans if s.trace_id == CLIENT_TRACE]
    assert len(traced_spans) == 2
    assert {s.parent_span_id for s in traced_spans} == {CLIENT_SPAN}
    assert {f"00-{s.trace_id}-{s.span_id}-01" for s in traced_spans} == set(upstream_parents)
    for row in rows:
        span = spans[row["id"]]
        attrs = span.attributes
        assert span.span.kind == 3  # SPAN_KIND_CLIENT
        assert attrs["gen_ai.request.model"] == row["model_requested"]
        assert attrs["gen_ai.response.model"] == row["model"]
        assert attrs["gen_ai.usage.input_tokens"] == row["input_tokens"]
        assert attrs["gen_ai.usage.output_tokens"] == row["output_tokens"]
        assert Decimal(attrs["openai_meter.cost_usd"]) == row["cost_usd"]
        assert attrs["openai_meter.team"] == row["team"]
        assert attrs["gen_ai.provider.name"] == "openai"
        assert attrs["http.response.status_code"] == 200
        assert attrs["server.address"] == "127.0.0.1"
    assert {spans[r["id"]].attributes["openai_meter.team"] for r in rows} == {
        "search",
        "unassigned",
    }

    # metrics: token sums and cost equal the ledger's
    tokens = otlp.points("gen_ai.client.token.usage")
    for kind, column in (("input", "input_tokens"), ("output", "output_tokens")):
        exported = sum(p.sum for a, p in tokens if a["gen_ai.token.type"] == kind)
        assert exported == sum(r[column] for r in rows)
    durations = otlp.points("gen_ai.client.operation.duration")
    assert sum(p.count for _, p in durations) == 4
    assert otlp.latest("gen_ai.client.operation.duration").unit == "s"  # type: ignore[union-attr]
    cost = sum(p.as_double for _, p in otlp.points("openai_meter.cost"))
    assert cost == pytest.approx(float(sum(r["cost_usd"] for r in rows)), rel=1e-9)
    assert {a["gen_ai.operation.name"] for a, _ in tokens} == {"chat", "embeddings"}

    # never a key or a body in anything exported
    for body in otlp.raw:
        assert b"SECRET" not in body
        assert b"sk-test" not in body


async def test_a_collector_that_is_down_costs_the_calls_nothing(
    fake_upstream: FakeUpstream, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    otlp.fail_next(1000)  # answers 503 to every export
    async with Product(fake_upstream.url, tmp_path, otel=_otel(otlp.url, timeout_s=0.5)) as product:
        client = product.sdk(API_KEY)
        for _ in range(5):
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert reply.usage is not None
    assert len(await product.rows()) == 5
    assert otlp.requests  # it was tried
    assert not otlp.spans


async def test_otel_off_leaves_the_clients_traceparent_untouched(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    header = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    async with Product(fake_upstream.url, tmp_path) as product:
        client = product.sdk(API_KEY)
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"traceparent": header}
        )
    assert fake_upstream.requests[-1].headers["traceparent"] == header


def test_enabling_otel_without_the_extra_is_a_startup_error(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "proxy.observe.otel", None)  # as if not installed
    settings = product_settings(fake_upstream.url, tmp_path, otel={"enabled": True})
    with pytest.raises(StartupError, match=r"openai-meter\[otel\]"):
        create_app(settings)
