"""Ledger rows -> FOCUS 1.2 rows (pure).

Grain: one FOCUS row per UTC day x organization x project x model x service tier x team x tags x
price reference x **charge kind** (SKU): a token kind (``input``, ``cached_input``, ``output``,
``audio_input``, ...) or a unit (``images``, ``audio_seconds``, ``characters``, a tool's calls).

Money:

* ``BilledCost`` (= ``EffectiveCost``: no commitments to amortize) comes from the ledger: a group's
  exact sum of ``cost_usd`` is split over its kinds in proportion to what the price book says each
  kind cost, to 10 places, the last kind taking the remainder -- so the BilledCost of every row
  sums to the ledger's own sum, exactly;
* ``ListCost`` = ``ListUnitPrice`` x ``PricingQuantity`` at the catalog's published price (no
  overrides, no discounts); ``ContractedCost`` = ``ContractedUnitPrice`` x ``PricingQuantity`` at
  the configured price (overrides and discounts applied) -- both to 10 places.

Calls the ledger has unpriced (``cost_usd`` NULL) become rows with ``BilledCost`` 0, null unit
prices and ``x_Unpriced`` true: visible, never a silent $0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

import orjson

from pricing.book import PriceBook, normalize_tier
from pricing.cost import CostComponent
from pricing.engine import token_buckets
from pricing.schema import TOKEN_DIMENSIONS
from pricing.usage import TOKEN_FIELDS, Usage
from proxy.admin.focus.columns import COLUMN_NAMES

PLACES: Final = Decimal("1e-10")
ZERO: Final = Decimal(0)
PROVIDER: Final = "OpenAI"
TEAM_TAG: Final = "openai-meter/team"
UNKNOWN_ACCOUNT: Final = "unknown"
_UNIT_NAMES: Final[dict[str, str]] = {
    "images": "Images",
    "audio_seconds": "Seconds",
    "characters": "Characters",
    "training_tokens": "Tokens",
    "training_hours": "Hours",
    "web_search_calls": "Calls",
    "file_search_calls": "Calls",
    "containers": "Containers",
    "file_search_storage_gb_days": "GB-Days",
}


def q(value: Decimal) -> Decimal:
    return value.quantize(PLACES, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class GroupKey:
    day: date
    organization: str | None
    project: str | None
    model: str
    tier: str
    team: str
    tags: tuple[tuple[str, str], ...]
    price_ref: str | None
    priced: bool


@dataclass(slots=True)
class Group:
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    units: dict[str, Decimal] = field(default_factory=dict)
    cost: Decimal = ZERO
    requests: int = 0
    estimated: int = 0

    @property
    def usage(self) -> Usage:
        return Usage(**self.tokens, units=self.units)


def group_key(row: Mapping[str, Any], default_project: str | None = None) -> GroupKey:
    started: datetime = row["started_at"]
    tags = row.get("tags") or {}
    return GroupKey(
        day=started.astimezone(UTC).date(),
        organization=row.get("organization"),
        project=row.get("project") or default_project,
        model=row.get("model") or row.get("model_requested") or "unknown",
        tier=normalize_tier(row.get("service_tier")) or str(row.get("service_tier")),
        team=row.get("team") or "unassigned",
        tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
        price_ref=row.get("price_ref"),
        priced=row.get("cost_usd") is not None,
    )


def add_row(
    groups: dict[GroupKey, Group], row: Mapping[str, Any], default_project: str | None = None
) -> None:
    """Add one ledger row (a dict with the ledger's column names) to its group."""
    key = group_key(row, default_project)
    group = groups.get(key)
    if group is None:
        group = groups[key] = Group()
    tokens = group.tokens
    for name in TOKEN_FIELDS:
        tokens[name] += int(row.get(name) or 0)
    units = row.get("units")
    if units:
        for unit, count in units.items():
            group.units[unit] = group.units.get(unit, ZERO) + Decimal(str(count))
    cost = row.get("cost_usd")
    if cost is not None:
        group.cost += cost
    group.requests += 1
    if row.get("usage_source") == "estimated":
        group.estimated += 1


def aggregate(
    rows: Iterable[Mapping[str, Any]], default_project: str | None = None
) -> dict[GroupKey, Group]:
    """Ledger rows summed per :class:`GroupKey`."""
    groups: dict[GroupKey, Group] = {}
    for row in rows:
        add_row(groups, row, default_project)
    return groups


@dataclass(frozen=True, slots=True)
class Charge:
    """One kind of one group: quantity consumed and its prices."""

    kind: str
    quantity: Decimal
    per: Decimal
    contracted_rate: Decimal | None
    list_rate: Decimal | None
    weight: Decimal  # what the configured book says it cost (for splitting the ledger's sum)


def _unit_of(kind: str) -> str:
    if kind in TOKEN_DIMENSIONS:
        return "Tokens"
    if kind.startswith("image"):
        return "Images"
    return _UNIT_NAMES.get(kind, "Units")


def _pricing_unit(kind: str, per: Decimal) -> tuple[str, Decimal]:
    """FOCUS unit format ``<quantity> <plural units>``: e.g. ``1000000 Tokens``, ``Minutes``."""
    if kind == "audio_seconds" and per == 60:
        return "Minutes", per
    unit = _unit_of(kind)
    return (unit if per == 1 else f"{per.normalize():f} {unit}"), per


def _components(
    book: PriceBook, usage: Usage, key: GroupKey, at: datetime
) -> dict[str, CostComponent] | None:
    cost = book.price(usage, key.model, key.tier, at)
    if cost.total is None:
        return None
    return {c.dimension: c for c in cost.components}


def charges(key: GroupKey, group: Group, book: PriceBook, list_book: PriceBook) -> list[Charge]:
    at = datetime.combine(key.day, time(12), tzinfo=UTC)
    usage = group.usage
    contracted = _components(book, usage, key, at) if key.priced else None
    listed = _components(list_book, usage, key, at) if key.priced else None
    if contracted is None:
        # Unpriced (or no longer priceable): quantities per token kind / unit, no prices.
        out = [
            Charge(kind, Decimal(qty), Decimal(1), None, None, ZERO)
            for kind, qty in zip(TOKEN_DIMENSIONS, token_buckets(usage), strict=True)
            if qty
        ]
        out.extend(
            Charge(unit, count, Decimal(1), None, None, ZERO)
            for unit, count in sorted(usage.units.items())
            if count and not unit.startswith("cached_")
        )
        return out or [Charge("requests", Decimal(group.requests), Decimal(1), None, None, ZERO)]
    out = []
    for kind, comp in contracted.items():
        listed_comp = (listed or {}).get(kind)
        out.append(
            Charge(
                kind=kind,
                quantity=comp.quantity,
                per=comp.per,
                contracted_rate=comp.rate,
                list_rate=listed_comp.rate if listed_comp is not None else comp.rate,
                weight=comp.amount,
            )
        )
    return out or [Charge("requests", Decimal(group.requests), Decimal(1), ZERO, ZERO, ZERO)]


def allocate(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """``total`` split in proportion to ``weights`` to 10 places; the parts sum to ``total``."""
    if not weights:
        return []
    whole = sum(weights, ZERO)
    if whole <= 0:
        return [total, *([ZERO] * (len(weights) - 1))]
    parts = [q(total * w / whole) for w in weights[:-1]]
    return [*parts, total - sum(parts, ZERO)]


def _month(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return start, nxt


def focus_rows(
    groups: Mapping[GroupKey, Group],
    book: PriceBook,
    list_book: PriceBook,
    *,
    billing_account: str | None = None,
) -> list[dict[str, Any]]:
    """FOCUS rows (dicts keyed by :data:`COLUMN_NAMES`), sorted for a stable output."""
    out: list[dict[str, Any]] = []
    for key in sorted(groups, key=_order):
        group = groups[key]
        kinds = charges(key, group, book, list_book)
        billed = allocate(group.cost, [c.weight for c in kinds]) if key.priced else None
        period_start = datetime.combine(key.day, time(0), tzinfo=UTC)
        month_start, month_end = _month(key.day)
        account = key.organization or billing_account or UNKNOWN_ACCOUNT
        sku_model = book.canonical(key.model) or key.model
        tags = {TEAM_TAG: key.team, **dict(key.tags)}
        for index, charge in enumerate(kinds):
            unit, per = _pricing_unit(charge.kind, charge.per)
            pricing_quantity = q(charge.quantity / per)
            cost = billed[index] if billed is not None else ZERO
            list_cost = (
                q(charge.list_rate * pricing_quantity) if charge.list_rate is not None else ZERO
            )
            contracted_cost = (
                q(charge.contracted_rate * pricing_quantity)
                if charge.contracted_rate is not None
                else ZERO
            )
            sku = f"{sku_model}:{charge.kind}:{key.tier}"
            row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
            row.update(
                BilledCost=cost,
                BillingAccountId=account,
                BillingAccountName=account,
                BillingCurrency="USD",
                BillingPeriodEnd=month_end,
                BillingPeriodStart=month_start,
                ChargeCategory="Usage",
                ChargeDescription=(
                    f"{key.model} {charge.kind.replace('_', ' ')} ({key.tier})"
                    + ("" if key.priced else ", unpriced by the ledger")
                ),
                ChargeFrequency="Usage-Based",
                ChargePeriodEnd=period_start + timedelta(days=1),
                ChargePeriodStart=period_start,
                ConsumedQuantity=charge.quantity,
                ConsumedUnit=_unit_of(charge.kind) if charge.kind != "requests" else "Requests",
                ContractedCost=contracted_cost,
                ContractedUnitPrice=charge.contracted_rate,
                EffectiveCost=cost,
                InvoiceIssuerName=PROVIDER,
                ListCost=list_cost,
                ListUnitPrice=charge.list_rate,
                PricingCategory="Standard",
                PricingQuantity=pricing_quantity,
                PricingUnit=unit if charge.kind != "requests" else "Requests",
                ProviderName=PROVIDER,
                PublisherName=PROVIDER,
                ServiceCategory="AI and Machine Learning",
                ServiceName="OpenAI API",
                ServiceSubcategory="Generative AI",
                SkuId=sku,
                SkuMeter=charge.kind.replace("_", " ").title(),
                SkuPriceId=f"{key.price_ref or sku}:{charge.kind}" if key.priced else None,
                SubAccountId=key.project,
                SubAccountName=key.project,
                Tags=orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode(),
                x_Model=key.model,
                x_TokenKind=charge.kind,
                x_ServiceTier=key.tier,
                x_Team=key.team,
                x_Requests=group.requests if index == 0 else 0,
                x_Unpriced=not key.priced,
                x_EstimatedRequests=group.estimated if index == 0 else 0,
            )
            out.append(row)
    return out


def _order(key: GroupKey) -> tuple[Any, ...]:
    return (
        key.day,
        key.organization or "",
        key.project or "",
        key.model,
        key.tier,
        key.team,
        key.tags,
        key.price_ref or "",
        key.priced,
    )
