"""The price book: the loaded catalog plus configuration, answering ``price(usage, model, tier, at)``.

Create one at start-up (``PriceBook.load(...)``) and pass it in; it holds no global state. Lookups
are cached per model name and per (entry, tier, variant), so the hot path is a dict lookup, a
short scan of a model's dated entries and a few ``Decimal`` multiply-adds.

Costs are exact ``Decimal`` values with at most 10 decimal places, matching the ledger's
``NUMERIC(20,10)`` (see :mod:`pricing.engine`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final

from pricing.cost import Cost
from pricing.engine import ToolRate, compute_cost
from pricing.load import parse_catalog, shipped_catalog_texts
from pricing.overrides import apply_overrides, check_percent
from pricing.plan import TIERS, PlanSet, compile_plans
from pricing.resolve import Resolved, resolve
from pricing.schema import CatalogFile, Entry, ToolPrice
from pricing.tiers import TIER_ALIASES as TIER_ALIASES  # re-exported
from pricing.tiers import normalize_tier as normalize_tier  # re-exported
from pricing.usage import Usage

_CACHE_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class _Period:
    start: date
    end: date | None
    entry: Entry


_Quote = tuple[PlanSet, Mapping[str, ToolRate], Decimal]


class PriceBook:
    """Satisfies :class:`pricing.cost.Pricer`."""

    def __init__(
        self,
        files: Iterable[CatalogFile],
        *,
        overrides: Mapping[str, Mapping[str, Decimal]] | None = None,
        discount_percent: Decimal = Decimal(0),
        model_discount_percent: Mapping[str, Decimal] | None = None,
    ) -> None:
        entries: list[Entry] = []
        tools: list[ToolPrice] = []
        for catalog in files:
            entries.extend(catalog.entries)
            tools.extend(catalog.tools)
        entries, self._overridden = apply_overrides(entries, overrides or {})
        self._entries: tuple[Entry, ...] = tuple(entries)
        self._tools: tuple[ToolPrice, ...] = tuple(tools)
        self._names: dict[str, str] = {}
        periods: dict[str, list[_Period]] = {}
        for entry in entries:
            for name in (entry.model, *entry.aliases, *entry.snapshots):
                self._names[name] = entry.model
            periods.setdefault(entry.model, []).append(
                _Period(entry.effective_from, entry.effective_until, entry)
            )
        self._periods = {m: sorted(p, key=lambda x: x.start) for m, p in periods.items()}
        self._discount = check_percent("discount_percent", discount_percent)
        self._model_discount: dict[str, Decimal] = {}
        for name, pct in (model_discount_percent or {}).items():
            found = resolve(name, self._names)  # a snapshot or alias discounts its model
            model = found.model if found is not None else name
            self._model_discount[model] = check_percent(f"model_discount_percent.{name}", pct)
        fine_tunable = {e.model for e in entries if e.fine_tuned and e.fine_tuned.token_items()}
        self._models = frozenset(self._periods) | frozenset(f"ft:{m}" for m in fine_tunable)
        self._resolved: dict[str, Resolved | None] = {}
        self._plans: dict[tuple[str, str, bool], PlanSet] = {}
        self._quotes: dict[tuple[str | None, str | None, date], _Quote | Cost] = {}

    @classmethod
    def load(
        cls,
        *,
        overrides: Mapping[str, Mapping[str, Decimal]] | None = None,
        discount_percent: Decimal = Decimal(0),
        model_discount_percent: Mapping[str, Decimal] | None = None,
    ) -> PriceBook:
        """Load the shipped catalog (``pricing/catalog/*.yaml``) with configuration applied.

        ``overrides`` is DESIGN's ``pricing.overrides``: model -> {dimension: USD per 1M tokens}
        (see :mod:`pricing.overrides` for the dimension names); an unknown dimension raises
        ``ValueError`` naming the model and the key.
        """
        return cls(
            parse_catalog(shipped_catalog_texts()),
            overrides=overrides,
            discount_percent=discount_percent,
            model_discount_percent=model_discount_percent,
        )

    # -- resolution -------------------------------------------------------------------------

    def _resolve(self, model: str) -> Resolved | None:
        try:
            return self._resolved[model]
        except KeyError:
            pass
        found = resolve(model, self._names)
        if len(self._resolved) >= _CACHE_LIMIT:
            self._resolved.clear()  # model names come from clients: keep the cache bounded
        self._resolved[model] = found
        return found

    def models(self) -> frozenset[str]:
        """Canonical catalog model names (``ft:<base>`` for bases with fine-tuned prices)."""
        return self._models

    def canonical(self, model: str | None) -> str | None:
        """The catalog model a name (snapshot, alias, ``ft:…``) resolves to, or ``None``."""
        if not model:
            return None
        found = self._resolve(model)
        if found is None:
            return None
        return f"ft:{found.model}" if found.fine_tuned else found.model

    def entry_at(self, model: str, at: date) -> Entry | None:
        """The entry of catalog model ``model`` in effect on ``at`` (UTC date)."""
        for period in self._periods.get(model, ()):
            if period.start <= at and (period.end is None or at < period.end):
                return period.entry
        return None

    def entries(self) -> tuple[Entry, ...]:
        return self._entries

    def discount_percent(self, model: str) -> Decimal:
        """The discount on catalog model ``model``'s costs: its own, else the global one (0-100)."""
        return self._model_discount.get(model, self._discount)

    # -- pricing ----------------------------------------------------------------------------

    def price(self, usage: Usage, model: str | None, tier: str | None, at: datetime) -> Cost:
        """Price one call. Unpriced calls come back with ``total=None`` and a reason."""
        day = at.date() if at.tzinfo is None or at.tzinfo is UTC else at.astimezone(UTC).date()
        key = (model, tier, day)
        quote = self._quotes.get(key)
        if quote is None:
            quote = self._quote(model, tier, day)
            if len(self._quotes) >= _CACHE_LIMIT:
                self._quotes.clear()  # names come from clients: keep the cache bounded
            self._quotes[key] = quote
        if isinstance(quote, Cost):
            return quote
        plans, tools, discount = quote
        plan = plans.base
        if plans.long is not None and usage.input_tokens > (plans.long_above or 0):
            plan = plans.long
        return compute_cost(usage, plan, tools, discount)

    def price_sum(self, usage: Usage, model: str | None, tier: str | None, at: datetime) -> Cost:
        """Price the summed usage of several calls of one UTC day, as their per-call prices add up.

        Exact only for calls that each stay at or under :meth:`long_context_floor` input tokens
        (so each would get the ordinary plan), bill no ``units``, have consistent token subsets,
        and when no discount is configured (a discount rounds per call): the what-if and savings
        reports sum such calls in SQL and price them once (:mod:`pricing.whatif`).
        """
        quote = self._cached_quote(model, tier, at)
        if isinstance(quote, Cost):
            return quote
        plans, tools, discount = quote
        return compute_cost(usage, plans.base, tools, discount)

    def _cached_quote(self, model: str | None, tier: str | None, at: datetime) -> _Quote | Cost:
        day = at.date() if at.tzinfo is None or at.tzinfo is UTC else at.astimezone(UTC).date()
        key = (model, tier, day)
        quote = self._quotes.get(key)
        if quote is None:
            quote = self._quote(model, tier, day)
            if len(self._quotes) >= _CACHE_LIMIT:
                self._quotes.clear()
            self._quotes[key] = quote
        return quote

    def long_context_floor(self) -> int | None:
        """The smallest long-context threshold of any entry (``None``: no entry has one)."""
        floors = [e.long_context.above_input_tokens for e in self._entries if e.long_context]
        return min(floors) if floors else None

    def change_days(self) -> tuple[date, ...]:
        """Every UTC day on which some price starts or stops (entries and tool fees), sorted.

        Between two such days every lookup answers the same, so calls of one model and tier
        anywhere in that span price alike (the what-if report sums them per span, not per day).
        """
        days: set[date] = set()
        spans: list[tuple[date, date | None]] = [
            (e.effective_from, e.effective_until) for e in self._entries
        ]
        spans += [(t.effective_from, t.effective_until) for t in self._tools]
        for start, end in spans:
            days.add(start)
            if end is not None:
                days.add(end)
        return tuple(sorted(days))

    def has_discount(self) -> bool:
        """Whether any percentage discount (global or per model) is configured."""
        return bool(self._discount) or any(self._model_discount.values())

    def _quote(self, model: str | None, tier: str | None, day: date) -> _Quote | Cost:
        """Everything about a call that does not depend on its usage (cached)."""
        if not model:
            return Cost(total=None, price_ref=None, unpriced_reason="no model")
        tier_name = normalize_tier(tier)
        if tier_name is None:
            return Cost(None, None, unpriced_reason=f"unknown service tier {tier!r}")
        found = self._resolve(model)
        if found is None:
            return Cost(None, None, unpriced_reason=f"unknown model {model!r}")
        entry = self.entry_at(found.model, day)
        if entry is None:
            return Cost(
                None, None, unpriced_reason=f"no price for {found.model} in effect on {day}"
            )
        plans = self._plan_set(entry, tier_name, found.fine_tuned)
        discount = self._model_discount.get(found.model, self._discount)
        return plans, self._tool_rates(found.model, day), discount

    def _plan_set(self, entry: Entry, tier: str, fine_tuned: bool) -> PlanSet:
        key = (entry.key, tier, fine_tuned)
        plans = self._plans.get(key)
        if plans is None:
            suffix = "+override" if entry.model in self._overridden else ""
            plans = compile_plans(entry, tier, fine_tuned=fine_tuned, ref_suffix=suffix)
            self._plans[key] = plans
        return plans

    def plans(self, entry: Entry, *, fine_tuned: bool = False) -> dict[str, PlanSet]:
        """Every tier's compiled rates for an entry (for listings)."""
        return {tier: self._plan_set(entry, tier, fine_tuned) for tier in TIERS}

    def tool_prices_at(self, at: date) -> list[ToolPrice]:
        return [
            t
            for t in self._tools
            if t.effective_from <= at and (t.effective_until is None or at < t.effective_until)
        ]

    def _tool_rates(self, model: str, at: date) -> dict[str, ToolRate]:
        rates: dict[str, ToolRate] = {}
        for tool in self.tool_prices_at(at):
            specific = model in tool.models
            if not specific and "*" not in tool.models:
                continue
            if tool.unit in rates and not specific:
                continue
            rates[tool.unit] = ToolRate(
                tool.unit, tool.rate, Decimal(tool.per), f"{tool.unit}@{tool.effective_from}"
            )
        return rates

    def file_search_storage_cost(self, gb: Decimal, days: Decimal, at: date) -> Decimal | None:
        """Vector-store storage: ``gb`` GB kept ``days`` days, less the free allowance per day."""
        for tool in self.tool_prices_at(at):
            if tool.unit == "file_search_storage_gb_days":
                billable = max(gb - (tool.free_quantity or Decimal(0)), Decimal(0))
                return billable * days * tool.rate / Decimal(tool.per)
        return None
