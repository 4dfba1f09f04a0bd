"""Prometheus metrics from finished ledger records, on an injected registry.

Names and labels are DESIGN's contract (prefix ``openai_meter_``) plus the OpenTelemetry GenAI-style
``gen_ai_client_token_usage`` / ``gen_ai_client_operation_duration_seconds``. Every label is bounded:

* ``model``: the price catalog's models (a snapshot or alias such as ``gpt-4o-mini-2024-07-18``
  resolves to its catalog model ``gpt-4o-mini`` through ``canonical``, e.g. ``PriceBook.canonical``;
  without it a dated suffix is stripped), everything else ``other``;
* ``team``: configured teams, everything else ``unassigned``;
* ``endpoint``: :data:`proxy.http.endpoints.ENDPOINTS`; ``service_tier``: OpenAI's tiers or ``other``;
* ``user`` / ``key`` labels exist only when enabled, and stop growing at ``max_identity_values``
  distinct values (later ones are ``other``) so an opted-in label still cannot explode Prometheus.

Per record the work is O(1) and lock-free: label values are bounded through small caches, each raw
label combination's series are looked up once and kept, and an update is a float addition (plus a
``bisect`` for histograms) on plain objects owned by the event loop's thread; a custom collector turns
them into the exposition at scrape time, identical to what prometheus_client's own metrics export
(see "Series storage" below). Money is ``Decimal`` everywhere
else; it becomes ``float`` only here, at the Prometheus edge (the ledger stays exact).

The ledger writer registers its own ``openai_meter_ledger_*`` metrics on the same registry.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from threading import get_ident
from typing import Any, Final, Generic, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from proxy.http.endpoints import ENDPOINTS
from proxy.http.exchange import Exchange
from proxy.observe.ratelimits import parse_ratelimit_headers, tier_limits
from storage.record import UsageRecord

log = logging.getLogger(__name__)

PREFIX: Final = "openai_meter"
OTHER: Final = "other"
UNASSIGNED: Final = "unassigned"
PROVIDER: Final = "openai"

# OpenTelemetry GenAI semantic conventions, advisory bucket boundaries:
# gen_ai.client.operation.duration (seconds)
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# gen_ai.client.token.usage (tokens)
TOKEN_BUCKETS: Final[tuple[float, ...]] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# gen_ai.server.time_to_first_token (seconds) = 0.001 ... 10.0; reasoning models can think far
# longer than 10 s before the first token, so the tail is extended (20, 40, 80 s).
TTFT_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
# What metering adds to a call: 0.1 ms .. 100 ms.
OVERHEAD_BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

# ``tokens_total{type}`` -> UsageRecord column. ``input``/``output`` are totals, the rest subsets.
TOKEN_TYPES: Final[tuple[tuple[str, str], ...]] = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("audio_input", "audio_input_tokens"),
    ("audio_output", "audio_output_tokens"),
    ("image_input", "image_input_tokens"),
    ("image_output", "image_output_tokens"),
)

SERVICE_TIERS: Final[frozenset[str]] = frozenset(
    {"default", "auto", "flex", "priority", "scale", "batch"}
)

# Endpoint -> gen_ai.operation.name (semconv well-known values where one fits).
GENAI_OPERATIONS: Final[Mapping[str, str]] = {
    "chat.completions": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "images.generations": "generate_content",
    "images.edits": "generate_content",
    "images.variations": "generate_content",
}

_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
_MAX_CACHED: Final = 4096
_MAX_SMALL_LABEL_VALUES: Final = 64  # metering stages, estimate reasons: set by code, not clients


def status_class(status_code: int | None) -> str:
    """200 -> ``2xx``; no status (no response headers ever arrived) -> ``none``."""
    if status_code is None or not 100 <= status_code <= 599:
        return "none"
    return f"{status_code // 100}xx"


class LabelBounds:
    """Maps raw values to bounded label values. Pure; caches are bounded too."""

    def __init__(
        self,
        models: Iterable[str],
        teams: Iterable[str],
        canonical: Callable[[str], str | None] | None = None,
    ) -> None:
        self._models = frozenset(models)
        self._teams = frozenset(teams) | {UNASSIGNED}
        self._endpoints = frozenset(ENDPOINTS)
        self._canonical = canonical
        self._model_cache: dict[str, str] = {}

    @property
    def models(self) -> frozenset[str]:
        return self._models

    def model(self, raw: str | None) -> str:
        if raw is None:
            return OTHER
        cached = self._model_cache.get(raw)
        if cached is not None:
            return cached
        label = self._resolve_model(raw)
        if len(self._model_cache) < _MAX_CACHED:
            self._model_cache[raw] = label
        return label

    def _resolve_model(self, raw: str) -> str:
        if raw in self._models:
            return raw
        if self._canonical is not None:
            resolved = self._canonical(raw)
            return resolved if resolved is not None and resolved in self._models else OTHER
        base = _SNAPSHOT_SUFFIX.sub("", raw)
        if base != raw and base in self._models:
            return base
        return OTHER

    def team(self, raw: str | None) -> str:
        return raw if raw in self._teams else UNASSIGNED

    def endpoint(self, raw: str) -> str:
        return raw if raw in self._endpoints else OTHER

    @staticmethod
    def service_tier(raw: str | None) -> str:
        if raw is None:
            return "default"
        return raw if raw in SERVICE_TIERS else OTHER


class _CappedValues:
    """Passes through the first ``cap`` distinct values; later new ones become ``other``."""

    __slots__ = ("_cap", "_seen")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def __call__(self, raw: str | None) -> str:
        if raw is None:
            return "none"
        if raw in self._seen:
            return raw
        if len(self._seen) < self._cap:
            self._seen.add(raw)
            return raw
        return OTHER


# --- Series storage ------------------------------------------------------------------------------
#
# Every update lands in plain Python objects (a float attribute, a list of bucket counts) owned by
# the event loop's thread; a scrape turns them into ``Metric`` families (``_Collector``). This moves
# the cost from every call to every scrape: prometheus_client's own metrics take a lock per
# ``inc``/``observe`` (~14 ``inc`` + ~5 ``observe`` per record). The exported samples are the ones
# prometheus_client's ``Counter`` / ``Gauge`` / ``Histogram`` would export for the same updates:
# same names, types, help, label order, series order (creation order), values and ``_created``
# (``time.time()`` when a series is first touched); tests/proxy/observe/golden holds the proof.
#
# Threading: updates need no lock because only one thread makes them. ``_Owner`` claims the first
# updating thread; an update from any other thread raises (``submit`` and the rate-limit path log it
# once and drop the update; it cannot be counted, counting would be an update from that thread). A scrape runs synchronously, so on the owning thread no update can interleave with
# it: the snapshot is consistent. A scrape from another thread (not done by this product: both
# ``/metrics`` servers are aiohttp apps on the same loop) copies each series atomically under the GIL
# and is logged once; series may then be a few updates apart from each other.

_Samples = list[tuple[str, dict[str, str], float]]


def _use_created() -> bool:
    """prometheus_client's switch for ``_created`` samples (``PROMETHEUS_DISABLE_CREATED_SERIES``,
    ``disable_created_metrics()``), read at scrape time as its own metrics do."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class _Count:
    """A counter series. Increment with ``value += n`` after checking ``n >= 0`` (:func:`_inc`)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def samples(self, use_created: bool) -> _Samples:
        samples: _Samples = [("_total", {}, self.value)]
        if use_created:
            samples.append(("_created", {}, self.created))
        return samples


def _inc(counter: _Count, amount: float) -> None:
    if amount < 0:
        raise ValueError("Counters can only be incremented by non-negative amounts.")
    counter.value += amount


class _Gauge:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def samples(self, use_created: bool) -> _Samples:
        return [("", {}, self.value)]


class _Hist:
    """A histogram series: ``counts[i]`` observations fell in bucket ``i`` (not cumulative)."""

    __slots__ = ("bounds", "counts", "created", "le", "sum")

    def __init__(self, bounds: tuple[float, ...], le: tuple[str, ...]) -> None:
        self.bounds = bounds  # ends with +Inf
        self.le = le
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount == amount:  # NaN lands in no bucket, as with prometheus_client's Histogram
            self.counts[bisect_left(self.bounds, amount)] += 1.0

    def samples(self, use_created: bool) -> _Samples:
        counts = self.counts[:]  # one atomic copy: bucket counts and _count always agree
        samples: _Samples = []
        acc = 0.0
        for le, count in zip(self.le, counts, strict=True):
            acc += count
            samples.append(("_bucket", {"le": le}, acc))
        samples.append(("_count", {}, acc))
        if self.bounds[0] >= 0:
            samples.append(("_sum", {}, self.sum))
        if use_created:
            samples.append(("_created", {}, self.created))
        return samples


C = TypeVar("C", _Count, _Gauge, _Hist)


class _Family(Generic[C]):
    """One metric family: its series by label values, in creation order.

    ``family(*values)`` returns the series, creating it on first use (like ``metric.labels(...)``).
    A family without labels has its single series from the start (like an unlabelled metric).
    """

    __slots__ = ("_new", "documentation", "labelnames", "name", "series", "type")

    def __init__(
        self,
        type_: str,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        new: Callable[[], C],
    ) -> None:
        self.type = type_
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._new: Callable[[], C] = new
        self.series: dict[tuple[str, ...], C] = {}
        if not labelnames:
            self.series[()] = new()

    def __call__(self, *values: str) -> C:
        series = self.series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            series = self.series[values] = self._new()
        return series

    def describe(self) -> Metric:
        return Metric(self.name, self.documentation, self.type)

    def collect(self, use_created: bool) -> Metric:
        metric = Metric(self.name, self.documentation, self.type)
        names = self.labelnames
        for values, series in list(self.series.items()):  # list(): one atomic copy
            labels = dict(zip(names, values, strict=True))
            for suffix, extra, value in series.samples(use_created):
                metric.add_sample(self.name + suffix, {**labels, **extra}, value)
        return metric


class _Owner:
    """The one thread allowed to update the metrics: the first one that does (the event loop's)."""

    __slots__ = ("_warned", "ident")

    def __init__(self) -> None:
        self.ident: int | None = None
        self._warned = False

    def claim(self) -> None:
        """Called when ``get_ident() != self.ident``: the first updater claims, others fail."""
        ident = get_ident()
        if self.ident is None:
            self.ident = ident
        elif ident != self.ident:
            raise RuntimeError(
                "proxy.observe.metrics.Metrics is updated from a second thread; it is lock-free and "
                "single-threaded by design (update it from the event loop only)"
            )

    def scraping(self) -> None:
        if self.ident is not None and get_ident() != self.ident and not self._warned:
            self._warned = True
            log.warning(
                "metrics scraped from a thread other than the event loop's: series are copied "
                "one by one and may be a few updates apart (logged once)"
            )


class _Collector:
    """The families on a ``CollectorRegistry``, in registration order (= exposition order)."""

    def __init__(self, families: list[_Family[Any]], owner: _Owner) -> None:
        self._families = families
        self._owner = owner

    def describe(self) -> list[Metric]:
        return [family.describe() for family in self._families]

    def collect(self) -> list[Metric]:
        self._owner.scraping()
        use_created = _use_created()
        return [family.collect(use_created) for family in self._families]


def _histogram_bounds(buckets: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Upper bounds with +Inf appended and their ``le`` strings (as prometheus_client does)."""
    bounds = tuple(float(b) for b in buckets)
    if list(bounds) != sorted(bounds):
        raise ValueError("Buckets not in sorted order")
    if bounds[-1] != math.inf:
        bounds += (math.inf,)
    return bounds, tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class _Series:
    """Bounded labels and series for one raw label combination (see ``Metrics._bind``).

    Only series every record touches are bound up front; token types, cost, unpriced and TTFT
    series are created on first use, so no empty series is exported for what never happened.
    """

    endpoint: str
    model: str
    team: str
    tier: str
    ident: tuple[str, ...]
    requests: _Count
    duration: _Hist
    genai_duration: _Hist
    genai_input: _Hist
    genai_output: _Hist
    tokens: dict[str, _Count] = field(default_factory=dict)
    cost: _Count | None = None
    unpriced: _Count | None = None
    ttft: _Hist | None = None


class Metrics:
    """The proxy's metrics. A :class:`storage.record.RecordSink`: ``submit`` never raises.

    Single-threaded: update it from the event loop's thread only (see ``_Owner`` above).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        models: Iterable[str],
        teams: Iterable[str],
        user_labels: bool = False,
        key_labels: bool = False,
        usage_tier: str | None = None,
        max_identity_values: int = 1000,
        canonical: Callable[[str], str | None] | None = None,
        savings: Callable[[UsageRecord], Mapping[str, Decimal]] | None = None,
    ) -> None:
        self.bounds = LabelBounds(models, teams, canonical)
        self._savings_of = savings
        self._user_labels = user_labels
        self._key_labels = key_labels
        self._has_identity = user_labels or key_labels
        self._users = _CappedValues(max_identity_values)
        self._keys = _CappedValues(max_identity_values)
        self._stages = _CappedValues(_MAX_SMALL_LABEL_VALUES)
        self._reasons = _CappedValues(_MAX_SMALL_LABEL_VALUES)
        self._broken = False
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._owner = _Owner()
        families: list[_Family[Any]] = []

        identity = (("user",) if user_labels else ()) + (("key",) if key_labels else ())

        def add(family: _Family[C]) -> _Family[C]:
            families.append(family)
            return family

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> _Family[_Count]:
            return add(_Family("counter", f"{PREFIX}_{name}", doc, labels, _Count))

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> _Family[_Gauge]:
            return add(_Family("gauge", f"{PREFIX}_{name}", doc, labels, _Gauge))

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...], ns: str
        ) -> _Family[_Hist]:
            bounds, le = _histogram_bounds(buckets)
            full = f"{ns}_{name}" if ns else name
            return add(_Family("histogram", full, doc, labels, lambda: _Hist(bounds, le)))

        self._requests = counter(
            "requests",
            "Forwarded calls, one per ledger record.",
            ("endpoint", "model", "team", "status_class", *identity),
        )
        self._tokens = counter(
            "tokens",
            "Tokens by type; input/output are totals, the other types are subsets of them.",
            ("endpoint", "model", "team", "type", *identity),
        )
        self._cost = counter(
            "cost_usd",
            "Priced spend in USD (the ledger holds the exact decimal amounts).",
            ("model", "team", "service_tier", *identity),
        )
        self._unpriced = counter(
            "unpriced_requests", "Calls recorded with no price (cost NULL).", ("model",)
        )
        self._savings = counter(
            "savings_usd",
            "Savings already made in USD: kind cached_input (vs the full input price), batch and "
            "flex (vs standard).",
            ("model", "team", "kind"),
        )
        self._estimated = counter(
            "estimated_usage",
            "Calls whose usage was estimated locally (tiktoken) instead of reported.",
            ("endpoint", "reason"),
        )
        self._duration = histogram(
            "request_duration_seconds",
            "Whole call duration as the client saw it.",
            ("endpoint", "model"),
            DURATION_BUCKETS,
            PREFIX,
        )
        self._ttft = histogram(
            "time_to_first_token_seconds",
            "Time to the first body chunk of streamed responses.",
            ("endpoint", "model"),
            TTFT_BUCKETS,
            PREFIX,
        )
        self._overhead = histogram(
            "proxy_overhead_seconds",
            "Time the proxy itself added to a call (metering and forwarding work).",
            (),
            OVERHEAD_BUCKETS,
            PREFIX,
        )()
        self._errors = counter(
            "metering_errors",
            "Failures inside metering (the call itself went on).",
            ("stage",),
        )
        self._rl_remaining = gauge(
            "upstream_ratelimit_remaining",
            "x-ratelimit-remaining-* from the latest upstream response for the model.",
            ("kind", "model"),
        )
        self._rl_limit = gauge(
            "upstream_ratelimit_limit",
            "x-ratelimit-limit-* from the latest upstream response for the model.",
            ("kind", "model"),
        )
        self._rl_reset = gauge(
            "upstream_ratelimit_reset_seconds",
            "x-ratelimit-reset-* (seconds until the window resets) from the latest response.",
            ("kind", "model"),
        )
        self._tier_limit = gauge(
            "usage_tier_limit",
            "OpenAI's published limit for the configured usage tier (kind: rpm, rpd, tpm, "
            "batch_queue_tokens).",
            ("model", "kind"),
        )
        self._budget_spent = gauge(
            "budget_spent_usd", "Spend counted against a team's budget.", ("team", "period")
        )
        self._budget_limit = gauge("budget_limit_usd", "A team's budget limit.", ("team", "period"))
        genai_labels = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model")
        provider = ("gen_ai_provider_name",)
        self._genai_tokens = histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (OpenTelemetry GenAI).",
            (*genai_labels, "gen_ai_token_type", *provider),
            TOKEN_BUCKETS,
            "",
        )
        self._genai_duration = histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (OpenTelemetry GenAI).",
            (*genai_labels, *provider),
            DURATION_BUCKETS,
            "",
        )
        registry.register(_Collector(families, self._owner))
        if usage_tier is not None:
            self._set_tier(usage_tier)
        # Export the error series at 0 from the start, so "no errors" reads as 0, not "no data".
        for stage in ("metrics", "ratelimit_headers"):
            self._errors(stage)

    # --- RecordSink ------------------------------------------------------------------------------

    def submit(self, record: UsageRecord) -> None:
        try:
            if get_ident() != self._owner.ident:
                self._owner.claim()
            self._observe_record(record)
        except Exception:
            self._fail("metrics")

    def _observe_record(self, record: UsageRecord) -> None:
        key: tuple[Any, ...] = (
            record.endpoint,
            record.model,
            record.model_requested,
            record.team,
            record.status_code,
            record.service_tier,
        )
        if self._has_identity:
            key += self._identity(record)
        s = self._series.get(key)
        if s is None:
            s = self._bind(key)
        s.requests.value += 1.0
        tokens = s.tokens
        for type_, column in TOKEN_TYPES:
            count = getattr(record, column)
            if count:
                child = tokens.get(type_)
                if child is None:
                    child = tokens[type_] = self._tokens(
                        s.endpoint, s.model, s.team, type_, *s.ident
                    )
                _inc(child, count)
        cost = record.cost_usd
        if cost is None:
            unpriced = s.unpriced
            if unpriced is None:
                unpriced = s.unpriced = self._unpriced(s.model)
            unpriced.value += 1.0
        else:
            cost_series = s.cost
            if cost_series is None:
                cost_series = s.cost = self._cost(s.model, s.team, s.tier, *s.ident)
            _inc(cost_series, float(cost))
        source = record.usage_source
        if source == "estimated":
            self.estimated(s.endpoint, record.estimate_reason or "unknown")
        if record.latency_ms is not None:
            seconds = record.latency_ms / 1000.0
            s.duration.observe(seconds)
            s.genai_duration.observe(seconds)
        if record.stream and record.ttft_ms is not None:
            ttft = s.ttft
            if ttft is None:
                ttft = s.ttft = self._ttft(s.endpoint, s.model)
            ttft.observe(record.ttft_ms / 1000.0)
        if source != "none":
            s.genai_input.observe(record.input_tokens)
            s.genai_output.observe(record.output_tokens)
        # Last, so a failure here costs only this series: cached calls and batch/flex calls only.
        if (
            self._savings_of is not None
            and cost is not None
            and (record.cached_input_tokens or s.tier in ("batch", "flex"))
        ):
            for kind, amount in self._savings_of(record).items():
                _inc(self._savings(s.model, s.team, kind), float(amount))

    def _bind(self, key: tuple[Any, ...]) -> _Series:
        """Bounded labels and the always-used series for one raw label combination, cached."""
        endpoint_raw, model_raw, requested_raw, team_raw, status, tier_raw = key[:6]
        ident: tuple[str, ...] = key[6:]
        bounds = self.bounds
        endpoint = bounds.endpoint(endpoint_raw)
        model = bounds.model(model_raw or requested_raw)
        requested = bounds.model(requested_raw or model_raw)
        team = bounds.team(team_raw)
        operation = GENAI_OPERATIONS.get(endpoint, endpoint)
        genai = self._genai_tokens
        series = _Series(
            endpoint=endpoint,
            model=model,
            team=team,
            tier=bounds.service_tier(tier_raw),
            ident=ident,
            requests=self._requests(endpoint, model, team, status_class(status), *ident),
            duration=self._duration(endpoint, model),
            genai_duration=self._genai_duration(operation, requested, model, PROVIDER),
            genai_input=genai(operation, requested, model, "input", PROVIDER),
            genai_output=genai(operation, requested, model, "output", PROVIDER),
        )
        if len(self._series) >= _MAX_CACHED:
            self._series.clear()  # raw values come from clients: keep the cache bounded
        self._series[key] = series
        return series

    def _identity(self, record: UsageRecord) -> tuple[str, ...]:
        if not (self._user_labels or self._key_labels):
            return ()
        values: tuple[str, ...] = ()
        if self._user_labels:
            values += (self._users(record.user),)
        if self._key_labels:
            values += (self._keys(record.key_fingerprint),)
        return values

    # --- Other moments ---------------------------------------------------------------------------

    def observe_overhead(self, seconds: float) -> None:
        if get_ident() != self._owner.ident:
            self._owner.claim()
        self._overhead.observe(seconds)

    def metering_error(self, stage: str) -> None:
        if get_ident() != self._owner.ident:
            self._owner.claim()
        self._errors(self._stages(stage)).value += 1.0

    def on_error(self, stage: str, exc: BaseException) -> None:
        """Adapter for ``UsageMeter(on_error=...)`` and ``build_app(on_metering_error=...)``."""
        self.metering_error(stage)

    def estimated(self, endpoint: str, reason: str) -> None:
        """Counted by :meth:`submit` for records with ``usage_source == "estimated"``; call this
        directly only for estimates that never become a record."""
        if get_ident() != self._owner.ident:
            self._owner.claim()
        self._estimated(self.bounds.endpoint(endpoint), self._reasons(reason)).value += 1.0

    def observe_ratelimit_headers(
        self, headers: Mapping[str, str], model: str | None = None
    ) -> None:
        """Upstream response headers -> headroom gauges. Never raises."""
        try:
            if get_ident() != self._owner.ident:
                self._owner.claim()
            label = self.bounds.model(model)
            for state in parse_ratelimit_headers(headers):
                if state.remaining is not None:
                    self._rl_remaining(state.kind, label).set(state.remaining)
                if state.limit is not None:
                    self._rl_limit(state.kind, label).set(state.limit)
                if state.reset_seconds is not None:
                    self._rl_reset(state.kind, label).set(state.reset_seconds)
        except Exception:
            self._fail("ratelimit_headers")

    def set_budget(self, team: str, period: str, spent: Decimal, limit: Decimal | None) -> None:
        """Budget gauges for one team and period (``daily`` / ``monthly``); no limit -> no gauge."""
        if get_ident() != self._owner.ident:
            self._owner.claim()
        label = self.bounds.team(team)
        self._budget_spent(label, period).set(float(spent))
        if limit is not None:
            self._budget_limit(label, period).set(float(limit))

    def _set_tier(self, tier: str) -> None:
        for (model, kind), limit in tier_limits(tier).items():
            label = self.bounds.model(model)
            if label != OTHER:
                self._tier_limit(label, kind).set(limit)

    def _fail(self, stage: str) -> None:
        if not self._broken:
            self._broken = True
            log.exception("metrics update failed (logged once; counted in metering_errors_total)")
        with contextlib.suppress(Exception):  # nothing left to report to
            self.metering_error(stage)


class MetricsStage:
    """A :class:`proxy.http.exchange.RequestStage` feeding what records do not carry: the upstream's
    rate-limit headers (per resolved model) and the proxy's own overhead for the call.

    Overhead = request-side work before the upstream got the request (reading the body, stages,
    usage injection) + tail work after the upstream body ended (rewriter flush, end of response).
    Time spent waiting on the upstream is not overhead.
    """

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        return None

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None:
        metrics = self._metrics
        headers = exchange.response_headers
        if headers is not None:
            metrics.observe_ratelimit_headers(headers, model=record.model)
        overhead = call_overhead_s(exchange)
        if overhead is not None:
            metrics.observe_overhead(overhead)


def call_overhead_s(exchange: Exchange) -> float | None:
    """The proxy's own time in a call (see :class:`MetricsStage`); None if it never reached upstream."""
    sent = exchange.upstream_sent_monotonic
    if sent is None:
        return None
    overhead = max(0.0, sent - exchange.started_monotonic)
    done, finished = exchange.upstream_done_monotonic, exchange.finished_monotonic
    if done is not None and finished is not None:
        overhead += max(0.0, finished - done)
    return overhead


class ReconcileMetrics:
    """``openai_meter_reconcile_captured_ratio{project}`` and ``..._reconcile_billed_usd{project}``:
    per OpenAI project, over the days the latest reconciliation read (ledger cost / OpenAI's billed
    USD, and the billed USD). Set by the server's reconciliation (``reconcile.interval``), from the
    event loop; ``project`` is bounded (:data:`MAX_RECONCILE_PROJECTS`, then ``other``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._ratio = prometheus_metrics.Gauge(
            f"{PREFIX}_reconcile_captured_ratio",
            "Ledger cost / OpenAI's billed USD per project over the latest reconciliation's days "
            "(1 = everything OpenAI billed went through the proxy and was priced).",
            ("project",),
            registry=registry,
        )
        self._billed = prometheus_metrics.Gauge(
            f"{PREFIX}_reconcile_billed_usd",
            "OpenAI's billed USD (Costs API) per project over the latest reconciliation's days.",
            ("project",),
            registry=registry,
        )
        self._projects = _CappedValues(MAX_RECONCILE_PROJECTS)

    def set(self, project: str | None, billed: Decimal, captured: Decimal | None) -> None:
        label = self._projects(project if project is not None else "-")
        self._billed.labels(label).set(float(billed))
        if captured is not None:
            self._ratio.labels(label).set(float(captured))


MAX_RECONCILE_PROJECTS: Final = 200


__all__ = [
    "DURATION_BUCKETS",
    "OVERHEAD_BUCKETS",
    "TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "LabelBounds",
    "Metrics",
    "MetricsStage",
    "ReconcileMetrics",
    "call_overhead_s",
    "status_class",
]
