"""Merging the workers' expositions (``serve --workers N``): counters and histograms sum, shared
gauges take the largest value, ``_created`` the earliest; the result renders in both formats."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text
from prometheus_client.parser import text_string_to_metric_families

from proxy.observe.metrics_merge import (
    carried_registry,
    counters_path,
    merge,
    merged_exposition,
    parse,
    read_counters,
    render_families,
)

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


MONOTONIC_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
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


# -- a worker that dies and is restarted (serve --workers N, kill -9) -------------------------


class _Slot:
    """One worker slot: the registry of the worker now running in it, exposed with its carried
    counters (as WorkerRole.wire does), and its private socket path (nothing listens: a fake
    fetch answers for it)."""

    def __init__(self, directory: Path, index: int) -> None:
        self.socket = str(directory / f"w{index}.sock")
        self.alive = True
        self.restart()

    def restart(self) -> None:
        """kill -9 and restart: a fresh registry, whatever was in memory is gone."""
        self.registry = CollectorRegistry()
        self.requests = Counter("openai_meter_requests", "c", ["endpoint"], registry=self.registry)
        self.duration = Histogram(
            "openai_meter_request_duration_seconds", "d", ["endpoint"], buckets=(0.1, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self.pending = Gauge("openai_meter_ledger_pending_records", "p", registry=self.registry)
        self.exposed = carried_registry(self.registry, counters_path(self.socket))


def _slots(directory: Path, count: int) -> list[_Slot]:
    return [_Slot(directory, i) for i in range(count)]


async def _scrape(
    slots: list[_Slot], by: int
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A merged scrape answered by slot ``by``; dead slots do not answer their socket."""
    peers = {slot.socket: slot for i, slot in enumerate(slots) if i != by}

    async def fetch(path: str) -> list[Metric] | None:
        slot = peers[path]
        return parse(openmetrics_text(slot.exposed).decode()) if slot.alive else None

    body, _ = await merged_exposition(slots[by].exposed, list(peers), None, fetch=fetch)
    return _values(body.decode())


async def test_a_restarted_worker_carries_on_its_predecessors_counters(tmp_path: Path) -> None:
    first, second = _slots(tmp_path, 2)
    first.requests.labels("chat").inc(5)
    first.duration.labels("chat").observe(0.5)
    first.pending.set(7)
    second.requests.labels("embeddings").inc(2)
    before = await _scrape([first, second], 1)
    assert before[("openai_meter_requests_total", (("endpoint", "chat"),))] == 5
    assert before[("openai_meter_ledger_pending_records", ())] == 7

    first.alive = False  # killed: the survivor's scrape takes its counters from its file
    during = await _scrape([first, second], 1)
    assert during[("openai_meter_requests_total", (("endpoint", "chat"),))] == 5
    count = ("openai_meter_request_duration_seconds_count", (("endpoint", "chat"),))
    assert during[count] == 1
    # a dead worker's gauges are not carried: only the survivor's (0) is left
    assert during[("openai_meter_ledger_pending_records", ())] == 0

    first.restart()  # its successor: starts at zero, exposes its predecessor's counters + its own
    first.alive = True
    first.requests.labels("chat").inc()
    first.duration.labels("chat").observe(2.0)
    after = await _scrape([first, second], 0)
    assert after[("openai_meter_requests_total", (("endpoint", "chat"),))] == 6
    assert after[("openai_meter_requests_total", (("endpoint", "embeddings"),))] == 2
    assert after[count] == 2
    assert after[("openai_meter_request_duration_seconds_sum", (("endpoint", "chat"),))] == 2.5
    le = (("endpoint", "chat"), ("le", "1.0"))
    assert after[("openai_meter_request_duration_seconds_bucket", le)] == 1
    assert after[("openai_meter_ledger_pending_records", ())] == 0  # its own gauge only

    # a series only the predecessor had is still exposed by the successor alone
    assert (
        _values(openmetrics_text(first.exposed).decode())[
            ("openai_meter_requests_total", (("endpoint", "chat"),))
        ]
        == 6
    )


def test_an_unreadable_or_malformed_counters_file_is_not_carried(tmp_path: Path) -> None:
    path = tmp_path / "w0.counters"
    path.write_bytes(b"\xff\xfe not an exposition")
    assert read_counters(str(path)) == []
    path.write_text("openai_meter_requests_total{ 3\n# EOF\n")
    assert read_counters(str(path)) == []
    assert read_counters(str(tmp_path / "absent.counters")) == []
    registry = CollectorRegistry()
    Counter("openai_meter_requests", "c", registry=registry).inc(2)
    exposed = carried_registry(registry, str(path))  # starts from nothing, overwrites the file
    assert "openai_meter_requests_total 2.0" in openmetrics_text(exposed).decode()
    assert "openai_meter_requests_total 2.0" in path.read_text()


def test_a_counters_file_that_cannot_be_written_does_not_fail_the_scrape(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("openai_meter_requests", "c", registry=registry).inc(2)
    exposed = carried_registry(registry, str(tmp_path / "no" / "such" / "w0.counters"))
    assert "openai_meter_requests_total 2.0" in openmetrics_text(exposed).decode()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["call", "kill", "restart", "scrape"]),
        st.integers(0, 2),
        LABELS,
        st.floats(0, 5),
    ),
    max_size=40,
)


@settings(
    max_examples=300, deadline=None
)  # failing orders (call, scrape, kill, restart) are sparse
@given(OPS)
def test_merged_counters_never_decrease_whatever_dies_when(
    ops: list[tuple[str, int, str, float]],
) -> None:
    """Calls, kill -9s, restarts and scrapes in any order over three workers: no merged counter,
    histogram bucket, count or sum ever goes below what an earlier scrape showed; and when every
    call was shown by a scrape before its worker died, the final totals are exact."""

    async def run(directory: Path) -> None:
        slots = _slots(directory, 3)
        highest: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        unshown: set[int] = set()  # slots holding calls no scrape has collected yet
        calls, exact = 0, True
        for kind, index, endpoint, seconds in ops:
            slot = slots[index]
            if kind == "call" and slot.alive:
                slot.requests.labels(endpoint).inc()
                slot.duration.labels(endpoint).observe(seconds)
                unshown.add(index)
                calls += 1
            elif kind == "kill" and slot.alive:
                slot.alive = False
                exact = exact and index not in unshown  # never-scraped calls die with it
                unshown.discard(index)
            elif kind == "restart" and not slot.alive:
                slot.restart()
                slot.alive = True
            elif kind == "scrape" and slot.alive:
                got = await _scrape(slots, index)
                for key, value in highest.items():
                    assert got.get(key, 0.0) >= value - 1e-9 * max(1.0, value), key
                highest.update((k, v) for k, v in got.items() if k[0].endswith(MONOTONIC_SUFFIXES))
                unshown.clear()  # the scrape collected every live worker
        alive = [i for i, s in enumerate(slots) if s.alive]
        if alive and exact:
            got = await _scrape(slots, alive[0])
            total = sum(v for k, v in got.items() if k[0] == "openai_meter_requests_total")
            assert total == calls

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory)))
