"""The price list as of a date, as JSON-ready data (money as decimal strings). Pure.

Used by ``openai-meter prices`` and ``GET /meter/prices``. Token prices are USD per 1M tokens
(per-1K catalog data converted); tiers show listed or derived rates (batch 50%, flex = batch),
never the fallbacks the engine applies to kinds of tokens an entry does not price.

Configuration shows: rates are the ones in effect for the book (``pricing.overrides`` applied), and
each priced tier carries the ``price_ref`` the engine writes to the ledger for it, with its suffixes
(``+override`` for a negotiated price, ``-N%`` for a discount, which applies to a call's total and
so is listed beside the rates, not folded into them).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from pricing.book import PriceBook
from pricing.plan import TIERS, PlanSet, RawRates, tidy, tier_rates
from pricing.schema import Entry

TOKEN_UNIT = "USD per 1M tokens"


def _money(value: Decimal) -> str:
    return f"{tidy(value):f}"


def _rates(rates: RawRates) -> dict[str, Any]:
    out: dict[str, Any] = {k: _money(v) for k, v in rates.tokens.items()}
    if rates.images:
        out["per_image"] = {f"{q}:{s}": _money(v) for (q, s), v in sorted(rates.images.items())}
    if rates.per_minute is not None:
        out["per_minute"] = _money(rates.per_minute)
    if rates.per_1m_characters is not None:
        out["per_1m_characters"] = _money(rates.per_1m_characters)
    return out


def _tiers(entry: Entry, *, fine_tuned: bool = False, long_context: bool = False) -> dict[str, Any]:
    tiers: dict[str, Any] = {}
    for tier in TIERS:
        rates, _ = tier_rates(entry, tier, fine_tuned=fine_tuned, long_context=long_context)
        if rates is not None:
            tiers[tier] = _rates(rates)
    return tiers


OVERRIDE_SUFFIX = "+override"


def _refs(
    plans: dict[str, PlanSet], tiers: dict[str, Any], discount: Decimal, *, long: bool = False
) -> dict[str, str]:
    """The engine's ``price_ref`` per listed tier (discount suffix as ``compute_cost`` adds it)."""
    suffix = f"-{discount.normalize():f}%" if discount else ""
    refs = {}
    for tier in tiers:
        plan = plans[tier].long if long else plans[tier].base
        if plan is not None:
            refs[tier] = plan.ref + suffix
    return refs


def describe_entry(book: PriceBook, entry: Entry, at: date) -> dict[str, Any]:
    factor = Decimal(1000) if entry.token_unit == "per_1k_tokens" else Decimal(1)
    item: dict[str, Any] = {
        "model": entry.model,
        "entry": entry.key,
        "aliases": list(entry.aliases),
        "snapshots": list(entry.snapshots),
        "effective_from": entry.effective_from.isoformat(),
        "effective_until": entry.effective_until.isoformat() if entry.effective_until else None,
        "source": entry.source,
        "checked": entry.checked.isoformat(),
        "source_unit": "USD per 1K tokens" if factor != 1 else TOKEN_UNIT,
        "unit": TOKEN_UNIT,
        "tiers": _tiers(entry),
    }
    plans = book.plans(entry)
    discount = book.discount_percent(entry.model)
    item["price_refs"] = _refs(plans, item["tiers"], discount)
    if plans["standard"].base.ref.endswith(OVERRIDE_SUFFIX):
        item["override"] = True
    if discount:
        item["discount_percent"] = f"{discount.normalize():f}"
    if entry.long_context is not None:
        long_tiers = _tiers(entry, long_context=True)
        item["long_context"] = {
            "above_input_tokens": entry.long_context.above_input_tokens,
            "tiers": long_tiers,
            "price_refs": _refs(plans, long_tiers, discount, long=True),
        }
    fine = entry.fine_tuned
    if fine is not None:
        fine_tiers = _tiers(entry, fine_tuned=True)
        fine_item: dict[str, Any] = {
            "tiers": fine_tiers,
            "price_refs": _refs(book.plans(entry, fine_tuned=True), fine_tiers, discount),
        }
        if fine.training_tokens is not None:
            fine_item["training_per_1m_tokens"] = _money(fine.training_tokens * factor)
        if fine.training_hours is not None:
            fine_item["training_per_hour"] = _money(fine.training_hours)
        item["fine_tuned"] = fine_item
    tools = {}
    for tool in book.tool_prices_at(at):
        if entry.model in tool.models or "*" in tool.models:
            if tool.unit in tools and entry.model not in tool.models:
                continue
            tools[tool.unit] = {"rate": _money(tool.rate), "per": tool.per, "source": tool.source}
    if tools:
        item["tools"] = tools
    if entry.notes:
        item["notes"] = entry.notes
    return item


def price_list(book: PriceBook, at: date, model: str | None = None) -> list[dict[str, Any]]:
    """Entries in effect on ``at`` (all models, or the one ``model`` resolves to)."""
    if model:
        canonical = book.canonical(model)
        if canonical is None:
            return []
        names = [canonical.removeprefix("ft:")]
    else:
        names = sorted({e.model for e in book.entries()})
    items = []
    for name in names:
        entry = book.entry_at(name, at)
        if entry is not None:
            items.append(describe_entry(book, entry, at))
    return items
