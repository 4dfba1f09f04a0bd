"""``/metrics`` summed over the worker processes of ``serve --workers N``.

Each worker serves its own registry (OpenMetrics text) on a private unix socket
(:func:`unix_metrics_ctx`). The worker that is scraped renders its own registry, fetches the
others' and :func:`merge` s them: samples with the same name and labels are combined --

* counters, histograms, summaries: **summed** (``_created``: the earliest);
* gauges that count something each process holds (:data:`SUMMED_GAUGES`, e.g. records pending in
  each worker's ledger writer): summed;
* every other gauge mirrors shared state each worker reads for itself (a team's budget spent from
  the ledger, the upstream's latest rate-limit headers, a tier's limit, reconciliation results):
  the **largest** value, not N times it.

prometheus_client's multiprocess mode does not fit: the project's series are built at scrape time by
a collector (:mod:`proxy.observe.metrics`), not kept in mmap'ed files.

**Monotonic across a worker's death.** A worker killed and restarted starts its registry from zero;
summed as is, the merged counters would drop, Prometheus would read a counter reset and ``rate()``
would count the survivors' whole totals again. So every worker *slot* keeps its counters in a file
next to its private socket (:func:`counters_path`): whenever a worker's registry is collected --
for a merged scrape or for a peer -- it writes its monotonic samples (counters, histograms'
buckets/count/sum, summaries: :data:`CARRIED_TYPES`) there *before* they leave the process
(:class:`CarriedCounters`). The worker restarted in that slot reads the file at start as its base and
adds it to everything it exposes, and a scrape that cannot reach a peer (dead, restarting, slower than
:data:`PEER_TIMEOUT_S`, answering garbage) takes that peer's counters from its file instead
of leaving them out. A slot's exposed counters therefore never go below what it showed before; the
calls a worker counted after its last scrape and before it died are lost with it (the ledger keeps
them). Gauges are never carried: a dead worker's gauges are left out of the scrape, and its
successor reports its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger("openai_meter.metrics")

PEER_TIMEOUT_S: Final = 5.0
OPENMETRICS: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SUMMED_GAUGES: Final = frozenset({"openai_meter_ledger_pending_records"})
_SUMMED_TYPES: Final = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
# What a worker's successor carries on (never decreasing; a gaugehistogram may, so it is not).
CARRIED_TYPES: Final = frozenset({"counter", "histogram", "summary"})


def parse(text: str) -> list[Metric]:
    """An OpenMetrics exposition as metric families (raises ValueError on a malformed one)."""
    return list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def merge(expositions: Iterable[Sequence[Metric]]) -> list[Metric]:
    """The families of several processes combined sample by sample (see the module docstring).

    Families and series keep the order of their first appearance."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in expositions:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            elif target.type != family.type:
                continue  # cannot happen between workers of one build; never mix types
            series = values[family.name]
            summed = target.type in _SUMMED_TYPES or target.name in SUMMED_GAUGES
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = series.get(key)
                if seen is None:
                    series[key] = sample.value
                elif sample.name.endswith("_created"):
                    series[key] = min(seen, sample.value)
                elif summed:
                    series[key] = seen + sample.value
                else:
                    series[key] = max(seen, sample.value)
    for name, target in merged.items():
        target.samples = [
            Sample(sample_name, dict(labels), value)
            for (sample_name, labels), value in values[name].items()
        ]
    return list(merged.values())


class _Fixed:
    """A collector returning fixed families (to render merged ones with prometheus_client)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def render_families(families: list[Metric], accept: str | None) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def counters_path(socket_path: str) -> str:
    """The file where the worker serving ``socket_path`` keeps its counters (same directory)."""
    return os.path.splitext(socket_path)[0] + ".counters"


def read_counters(path: str) -> list[Metric]:
    """The counters a worker slot last exposed (empty when there is no file or it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("worker counters at %s unreadable, not carried: %r", path, exc)
        return []
    try:
        return parse(text)
    except ValueError as exc:
        log.warning("worker counters at %s malformed, not carried: %r", path, exc)
        return []


def _write_counters(path: str, families: Sequence[Metric]) -> None:
    carried = [family for family in families if family.type in CARRIED_TYPES]
    body, _ = render_families(carried, OPENMETRICS)
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(body)
        os.replace(temporary, path)  # atomic: a reader sees the old or the new file, never half
    except OSError as exc:
        log.warning("worker counters not saved to %s: %r", path, exc)


class CarriedCounters:
    """A worker's registry as it is exposed: its own samples plus the counters its slot's previous
    workers had exposed (read from ``path`` once, at start), saved back to ``path`` on every
    collection. Register it on a registry of its own and serve that one (:func:`carried_registry`).

    Collected synchronously on the event loop like the registry it wraps, so two collections never
    interleave and the file only ever grows."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self._registry = registry
        self._path = path
        self._base = read_counters(path)

    def collect(self) -> list[Metric]:
        own = parse(openmetrics_text(self._registry).decode())  # type: ignore[no-untyped-call]
        families = merge([own, self._base]) if self._base else own
        _write_counters(self._path, families)  # before any of it leaves the process
        return families


def carried_registry(registry: CollectorRegistry, path: str) -> CollectorRegistry:
    """A registry exposing ``registry`` plus the counters carried in ``path`` (see the module)."""
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(CarriedCounters(registry, path))
    return exposed


async def fetch_peer(path: str) -> list[Metric] | None:
    """The families a worker serves on its private socket, or None (logged) if it does not answer."""
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=path),
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S),
            ) as http,
            http.get("http://worker/metrics", headers={"Accept": OPENMETRICS}) as r,
        ):
            r.raise_for_status()
            return parse(await r.text())
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
        log.warning("metrics of the worker at %s left out of this scrape: %r", path, exc)
        return None


async def merged_exposition(
    registry: CollectorRegistry,
    peers: Sequence[str],
    accept: str | None,
    fetch: Callable[[str], Awaitable[list[Metric] | None]] = fetch_peer,
) -> tuple[bytes, str]:
    """This worker's registry plus every peer's, merged, in the format ``accept`` asks for."""
    # Own samples first, rendered synchronously on the loop (a consistent snapshot; see
    # proxy.observe.metrics_api), then the peers' fetched concurrently.
    own = parse(openmetrics_text(registry).decode())  # type: ignore[no-untyped-call]
    fetched = await asyncio.gather(*(fetch(path) for path in peers))
    # A peer that did not answer: the counters it last exposed, so the sum does not dip.
    families = [
        read_counters(counters_path(path)) if answer is None else answer
        for path, answer in zip(peers, fetched, strict=True)
    ]
    return render_families(merge([own, *families]), accept)


def unix_metrics_ctx(
    registry: CollectorRegistry, path: str
) -> Callable[[web.Application], AbstractAsyncContextManager[None]]:
    """An ``app.cleanup_ctx`` entry serving this worker's own registry (not merged) on ``path``."""
    from proxy.observe.metrics_api import metrics_app

    @asynccontextmanager
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a restarted worker's predecessor left it
        runner = web.AppRunner(metrics_app(registry), access_log=None)
        await runner.setup()
        await web.UnixSite(runner, path).start()
        try:
            yield
        finally:
            await runner.cleanup()

    return ctx
