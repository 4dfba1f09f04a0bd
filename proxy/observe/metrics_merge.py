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
a collector (:mod:`proxy.observe.metrics`), not kept in mmap'ed files. A worker that does not answer
within :data:`PEER_TIMEOUT_S` is left out of that scrape (logged): the sum then dips, and Prometheus'
``rate()`` treats the dip as a counter reset rather than inventing traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
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
    registry: CollectorRegistry, peers: Sequence[str], accept: str | None
) -> tuple[bytes, str]:
    """This worker's registry plus every peer's, merged, in the format ``accept`` asks for."""
    # Own samples first, rendered synchronously on the loop (a consistent snapshot; see
    # proxy.observe.metrics_api), then the peers' fetched concurrently.
    own = parse(openmetrics_text(registry).decode())  # type: ignore[no-untyped-call]
    fetched = await asyncio.gather(*(fetch_peer(path) for path in peers))
    return render_families(merge([own, *(f for f in fetched if f is not None)]), accept)


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
