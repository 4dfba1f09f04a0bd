"""What-if re-pricing and savings already made: pure, on top of :class:`pricing.book.PriceBook`.

Nothing here is a second cost engine: every amount comes from ``PriceBook.price`` (one call) or
``PriceBook.price_sum`` (the summed usage of calls that price linearly), so a what-if figure uses the
very rates, fallbacks, long-context rules and overrides that priced the ledger, *as of each call's
day*.

**Levers** (``--what-if``, ``?what_if=``): ``model=M`` re-prices a call's usage at catalog model
``M`` on the call's own tier; ``tier=T`` re-prices it on tier ``T`` (``standard``, ``batch``,
``flex``, ``priority``) of the call's own model. A call that cannot be re-priced is never dropped
and never $0: it is counted with the reason (see :func:`reprice`).

**Savings already made** (:func:`savings`), per call, in this order (so nothing counts twice):

* ``cached_input`` – the call priced as if its cached input tokens were ordinary input, minus the
  call as priced (both on its own tier);
* ``batch`` / ``flex`` – the call priced on the standard tier minus the call priced on its own
  tier (its cached tokens cached in both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Literal

from pricing.book import PriceBook, normalize_tier
from pricing.cost import Cost
from pricing.engine import SUBSET_UNITS
from pricing.schema import Entry
from pricing.usage import Usage

LeverKind = Literal["model", "tier"]
LEVER_KINDS: Final[tuple[str, ...]] = ("model", "tier")
WHAT_IF_TIERS: Final[tuple[str, ...]] = ("standard", "batch", "flex", "priority")
MAX_LEVERS: Final = 8

SAVINGS_KINDS: Final[tuple[str, ...]] = ("cached_input", "batch", "flex")

# Endpoints the Batch API accepts (OpenAI API spec, openai/openai-openapi as of 2026-08-21:
# /v1/responses, /v1/chat/completions, /v1/embeddings, /v1/completions, /v1/moderations,
# /v1/images/generations, /v1/images/edits), plus calls that already came through /v1/batches.
BATCH_ENDPOINTS: Final = frozenset(
    {
        "responses",
        "chat.completions",
        "embeddings",
        "completions",
        "moderations",
        "images.generations",
        "images.edits",
        "batches",
    }
)
# Flex processing is a ``service_tier`` of the Responses and Chat Completions APIs
# (developers.openai.com/api/docs/guides/flex-processing).
FLEX_ENDPOINTS: Final = frozenset({"responses", "chat.completions"})
# Priority processing likewise (developers.openai.com/api/docs/guides/priority-processing: "the
# service_tier field in the Responses or Completions response objects").
PRIORITY_ENDPOINTS: Final = frozenset({"responses", "chat.completions"})
_TIER_ENDPOINTS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"batch": BATCH_ENDPOINTS, "flex": FLEX_ENDPOINTS, "priority": PRIORITY_ENDPOINTS}
)
_TIER_API: Final[Mapping[str, str]] = MappingProxyType(
    {"batch": "the Batch API", "flex": "flex processing", "priority": "priority processing"}
)

UNPRICED_IN_LEDGER: Final = "unpriced in the ledger"


class LeverError(ValueError):
    """A lever the user wrote wrongly; the message names it and says what is allowed."""


@dataclass(frozen=True, slots=True)
class Lever:
    kind: LeverKind
    value: str

    @property
    def name(self) -> str:
        return f"{self.kind}={self.value}"


def parse_lever(text: str, book: PriceBook) -> Lever:
    """``model=gpt-4.1-nano`` / ``tier=batch``; a model must be one the catalog prices."""
    kind, sep, value = text.strip().partition("=")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or not value or kind not in LEVER_KINDS:
        raise LeverError(
            f"what-if {text[:80]!r}: write model=MODEL or tier=TIER "
            f"(tiers: {', '.join(WHAT_IF_TIERS)})"
        )
    if kind == "tier":
        tier = value.lower()
        if tier not in WHAT_IF_TIERS:
            raise LeverError(f"what-if tier {value[:40]!r}: choose from {', '.join(WHAT_IF_TIERS)}")
        return Lever("tier", tier)
    model = book.canonical(value)
    if model is None:
        raise LeverError(f"what-if model {value[:80]!r}: the price catalog has no such model")
    if model.startswith("ft:"):
        raise LeverError(f"what-if model {value[:80]!r}: a fine-tuned model is not a lever")
    return Lever("model", model)


def has_empty_lever(texts: list[str]) -> bool:
    """A value, or one of its comma-separated levers, is empty (``what_if=``, ``tier=batch,``):
    the API and the CLI refuse it (a typo or a half-built URL); the spend page's form, whose field
    may be cleared, reads it as no lever (:func:`parse_levers` skips empty parts)."""
    return not all(part.strip() for text in texts for part in text.split(","))


def parse_levers(texts: list[str], book: PriceBook) -> tuple[Lever, ...]:
    """Several levers (each may also be comma-separated); duplicates are an error."""
    levers: list[Lever] = []
    for text in texts:
        for part in text.split(","):
            if not part.strip():
                continue
            lever = parse_lever(part, book)
            if lever in levers:
                raise LeverError(f"what-if {lever.name!r} is given twice")
            levers.append(lever)
    if len(levers) > MAX_LEVERS:
        raise LeverError(f"at most {MAX_LEVERS} what-if levers at once")
    return tuple(levers)


@dataclass(frozen=True, slots=True)
class Calls:
    """Calls of one model, tier, endpoint and UTC day, priced the same way.

    ``summed``: ``usage`` is the sum of ``count`` calls that price linearly (see
    :meth:`PriceBook.price_sum`); otherwise ``count`` is 1 and ``usage`` is the call's own.
    """

    usage: Usage
    model: str | None
    tier: str | None
    endpoint: str
    at: datetime
    count: int = 1
    summed: bool = False


def _price(
    book: PriceBook, calls: Calls, usage: Usage, model: str | None, tier: str | None
) -> Cost:
    if calls.summed:
        return book.price_sum(usage, model, tier, calls.at)
    return book.price(usage, model, tier, calls.at)


def model_kind(entry: Entry) -> str:
    """What a catalog model produces, from how it is priced: image, transcription, speech, text,
    embedding. A call is re-priced only at a model of the same kind."""
    rates = entry.standard
    if rates.per_image or rates.image_output is not None:
        return "image"
    if rates.per_minute is not None:
        return "transcription"
    if rates.per_1m_characters is not None:
        return "speech"
    if rates.output is not None:
        return "text"
    return "embedding"


def _kind_at(book: PriceBook, model: str, calls: Calls) -> str | None:
    entry = book.entry_at(model.removeprefix("ft:"), calls.at.date())
    return None if entry is None else model_kind(entry)


@dataclass(frozen=True, slots=True)
class Repriced:
    """The what-if cost of some calls, or why they cannot be re-priced (``cost is None``)."""

    cost: Decimal | None
    reason: str | None = None


def reprice(book: PriceBook, lever: Lever, calls: Calls) -> Repriced:
    """Re-price ``calls`` under ``lever``. Not re-priceable (with the reason): a model the catalog
    does not know, a fine-tuned model (no drop-in substitute), a model of another kind (an
    embedding call at a chat model), an endpoint the tier does not serve, a tier or modality the
    target has no price for (the engine's own reason)."""
    tier = normalize_tier(calls.tier)
    if tier is None:
        return Repriced(None, f"unknown service tier {calls.tier!r}")
    if lever.kind == "tier":
        endpoints = _TIER_ENDPOINTS.get(lever.value)
        if endpoints is not None and calls.endpoint not in endpoints and tier != lever.value:
            return Repriced(None, f"{_TIER_API[lever.value]} does not serve {calls.endpoint}")
        cost = _price(book, calls, calls.usage, calls.model, lever.value)
    else:
        own = book.canonical(calls.model)
        if own is None:
            return Repriced(None, f"unknown model {calls.model!r}")
        if own.startswith("ft:"):
            return Repriced(None, "a fine-tuned model has no drop-in substitute")
        if own != lever.value:
            have, want = _kind_at(book, own, calls), _kind_at(book, lever.value, calls)
            if want is None:
                return Repriced(None, f"no price for {lever.value} in effect on {calls.at.date()}")
            if have != want:
                return Repriced(None, f"{have or 'unknown'} model; {lever.value} is {want}")
        cost = _price(book, calls, calls.usage, lever.value, calls.tier)
    if cost.total is None:
        return Repriced(None, cost.unpriced_reason or "no price")
    return Repriced(cost.total)


def without_cache(usage: Usage) -> Usage:
    """The same call as if no input token had been read from the cache."""
    units = {k: v for k, v in usage.units.items() if k not in SUBSET_UNITS}
    return replace(usage, cached_input_tokens=0, units=units)


def savings(book: PriceBook, calls: Calls) -> dict[str, Decimal]:
    """Savings already made by ``calls`` (kinds of :data:`SAVINGS_KINDS` that apply; none when
    the call or its comparison has no price)."""
    out: dict[str, Decimal] = {}
    usage = calls.usage
    actual: Cost | None = None
    if usage.cached_input_tokens:
        actual = _price(book, calls, usage, calls.model, calls.tier)
        full = _price(book, calls, without_cache(usage), calls.model, calls.tier)
        if actual.total is not None and full.total is not None:
            out["cached_input"] = full.total - actual.total
    tier = normalize_tier(calls.tier)
    if tier in ("batch", "flex"):
        if actual is None:
            actual = _price(book, calls, usage, calls.model, calls.tier)
        standard = _price(book, calls, usage, calls.model, "standard")
        if actual.total is not None and standard.total is not None:
            out[tier] = standard.total - actual.total
    return out


def has_savings(cached_input_tokens: int, tier: str | None) -> bool:
    """Cheap pre-check for the hot path: only these calls can have savings."""
    return bool(cached_input_tokens) or normalize_tier(tier) in ("batch", "flex")
