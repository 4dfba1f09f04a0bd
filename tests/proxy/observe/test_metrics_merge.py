"""Merging the workers' expositions (``serve --workers N``): counters and histograms sum, shared
gauges take the largest value, ``_created`` the earliest; the result renders in both formats."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text
from prometheus_client.parser import text_string_to_metric_families

from proxy.observe.metrics_merge import merge, merged_exposition, parse, render_families

LABELS = st.sampled_from(["chat", "embeddings", "responses", 'é"\\\n'])


def _worker(calls: list[tuple[str, float]], pending: int, budget: float) -> str:
    registry = CollectorRegistry()
    requests = Counter("openai_meter_requests", "calls", ["endpoint"], registry=registry)
    duration = Histogram(
        "openai_meter_request_duration_seconds", "d", ["endpoint"], buckets=(0.1, 1.0),
        registry=registry,
    )  # fmt: skip
    Gauge("openai_meter_ledger_pending_records", "p", registry=registry).set(pending)
    Gauge("openai_meter_budget_spent_usd", "b", ["team"], registry=registry).labels("t").set(budget)
    for endpoint, seconds in calls:
        requests.labels(endpoint).inc()
        duration.labels(endpoint).observe(seconds)
    return openmetrics_text(registry).decode()


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


CALLS = st.lists(st.tuples(LABELS, st.floats(0, 5)), max_size=30)


@given(st.lists(CALLS, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), min_size=4))
def test_merged_equals_one_process_that_saw_every_call(
    per_worker: list[list[tuple[str, float]]], pendings: list[int]
) -> None:
    workers = [_worker(calls, pendings[i], budget=float(i)) for i, calls in enumerate(per_worker)]
    merged, _ = render_families(merge(parse(text) for text in workers), "text/plain")
    everything = [call for calls in per_worker for call in calls]
    expected = _values(
        _worker(everything, sum(pendings[: len(workers)]), float(len(workers) - 1)).replace(
            "# EOF\n", ""
        )
    )
    got = _values(merged.decode())
    for key, value in expected.items():
        if key[0] == "openai_meter_request_duration_seconds_sum":
            assert abs(got[key] - value) <= 1e-9 * max(1.0, value)
        else:
            assert got[key] == value, key
    assert set(got) == set(expected)


def test_created_is_the_earliest_and_openmetrics_renders() -> None:
    first, second = _worker([("chat", 0.5)], 0, 0.0), _worker([("chat", 0.5)], 0, 0.0)
    families = merge([parse(second), parse(first)])
    created = [
        s.value for f in families for s in f.samples if s.name == "openai_meter_requests_created"
    ]
    earliest = min(
        s.value
        for text in (first, second)
        for f in parse(text)
        for s in f.samples
        if s.name == "openai_meter_requests_created"
    )
    assert created == [earliest]
    body, content_type = render_families(families, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
    assert 'openai_meter_requests_total{endpoint="chat"} 2.0' in body.decode()


def test_a_family_of_another_type_is_not_mixed_in() -> None:
    counter = parse(_worker([("chat", 0.1)], 0, 0.0))
    registry = CollectorRegistry()
    Gauge("openai_meter_requests", "not a counter", registry=registry).set(99)
    families = merge([counter, parse(openmetrics_text(registry).decode())])
    requests = next(f for f in families if f.name == "openai_meter_requests")
    assert requests.type == "counter"
    assert [s.value for s in requests.samples if s.name.endswith("_total")] == [1.0]


def test_nothing_to_merge_is_an_empty_exposition() -> None:
    body, _ = render_families(merge([]), None)
    assert body == b""


async def test_a_peer_that_is_gone_or_answers_garbage_is_left_out(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("openai_meter_requests", "calls", registry=registry).inc(3)
    garbage = web.Application()

    async def nonsense(_request: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xfe not { an exposition\n" * 1000)

    garbage.router.add_get("/metrics", nonsense)
    runner = web.AppRunner(garbage)
    await runner.setup()
    await web.UnixSite(runner, str(tmp_path / "garbage.sock")).start()
    try:
        body, _ = await merged_exposition(
            registry, [str(tmp_path / "gone.sock"), str(tmp_path / "garbage.sock")], None
        )
    finally:
        await runner.cleanup()
    assert "openai_meter_requests_total 3.0" in body.decode()
