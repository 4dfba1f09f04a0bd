"""Compiling a catalog entry into the rates of one tier: a :class:`RatePlan` (pure, no I/O).

Tier rules (``docs``: issue 3):

* **standard** – the entry's ``standard`` block.
* **batch** – the entry's ``batch`` block where it lists a rate, otherwise 50% of standard.
* **flex** – the entry's ``flex`` block where it lists a rate, otherwise the batch rate.
* **priority** / **scale** – only what the entry lists; no block means no price (never standard).
* **long context** – above ``long_context.above_input_tokens`` input tokens, the long-context token
  rates replace the standard ones for the whole call; batch/flex derive from them as above;
  priority needs ``long_context.priority``.
* **fine-tuned** (``ft:<base>:…``) – the base's ``fine_tuned`` token rates act as standard; batch
  and flex derive from them; no priority or scale price is known for fine-tuned models.

Fallbacks inside a tier (a kind of token the entry does not price separately):
``cached_input`` and ``cache_write`` → ``input`` (no caching discount assumed); ``image_input``
→ ``input`` (vision input of chat models is billed as text input); ``cached_image_input`` →
``image_input`` when listed, else ``cached_input``; ``cached_audio_input`` → ``audio_input``.
``output``, ``audio_input``, ``audio_output`` and ``image_output`` never fall back: a call with
such tokens and no such price is unpriced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from pricing.load import per_1m_factor
from pricing.schema import TOKEN_DIMENSIONS, Entry, TierRates, TokenRates

TIERS: Final[tuple[str, ...]] = ("standard", "batch", "flex", "priority", "scale")
HALF: Final = Decimal("0.5")
_EMPTY_IMAGES: Final[Mapping[tuple[str, str], Decimal]] = MappingProxyType({})


def tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros (``4.25000`` -> ``4.25``) without going to exponent notation."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


@dataclass(frozen=True, slots=True)
class RawRates:
    """Rates as listed (per 1M tokens after unit conversion), before fallbacks."""

    tokens: Mapping[str, Decimal] = field(default_factory=dict)
    images: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    per_minute: Decimal | None = None
    per_1m_characters: Decimal | None = None

    def scaled(self, factor: Decimal) -> RawRates:
        return RawRates(
            tokens={k: tidy(v * factor) for k, v in self.tokens.items()},
            images={k: tidy(v * factor) for k, v in self.images.items()},
            per_minute=None if self.per_minute is None else tidy(self.per_minute * factor),
            per_1m_characters=None
            if self.per_1m_characters is None
            else tidy(self.per_1m_characters * factor),
        )

    def overlaid(self, top: RawRates) -> RawRates:
        """``top``'s listed rates win; everything else comes from ``self``."""
        return RawRates(
            tokens={**self.tokens, **top.tokens},
            images={**self.images, **top.images},
            per_minute=top.per_minute if top.per_minute is not None else self.per_minute,
            per_1m_characters=top.per_1m_characters
            if top.per_1m_characters is not None
            else self.per_1m_characters,
        )

    def with_tokens(self, tokens: Mapping[str, Decimal]) -> RawRates:
        return RawRates(tokens, self.images, self.per_minute, self.per_1m_characters)


def raw_rates(block: TokenRates, factor: Decimal) -> RawRates:
    tokens = {k: tidy(v * factor) for k, v in block.token_items().items()}
    if not isinstance(block, TierRates):
        return RawRates(tokens=tokens)
    images = {
        (quality, size): tidy(rate)
        for quality, sizes in (block.per_image or {}).items()
        for size, rate in sizes.items()
    }
    per_minute = None if block.per_minute is None else tidy(block.per_minute)
    characters = None if block.per_1m_characters is None else tidy(block.per_1m_characters)
    return RawRates(tokens, images, per_minute, characters)


@dataclass(frozen=True, slots=True)
class RatePlan:
    """Everything the cost arithmetic needs for one (entry, tier, variant), fallbacks applied.

    ``tokens`` holds USD per 1M tokens in :data:`pricing.schema.TOKEN_DIMENSIONS` order and
    ``per_token`` the same divided by 10**6 (exact), or ``None`` where there is no price.
    ``unavailable`` says why the whole tier has no price (the call is then unpriced).
    """

    ref: str
    model: str
    tier: str
    tokens: tuple[Decimal | None, ...]
    per_token: tuple[Decimal | None, ...]
    token_billed: bool
    images: Mapping[tuple[str, str], Decimal] = field(default_factory=lambda: _EMPTY_IMAGES)
    default_quality: str | None = None
    default_size: str | None = None
    per_minute: Decimal | None = None
    per_1m_characters: Decimal | None = None
    training_tokens: Decimal | None = None
    training_hours: Decimal | None = None
    unavailable: str | None = None


def _with_fallbacks(tokens: Mapping[str, Decimal]) -> dict[str, Decimal | None]:
    out: dict[str, Decimal | None] = {d: tokens.get(d) for d in TOKEN_DIMENSIONS}
    out["cached_input"] = tokens.get("cached_input", tokens.get("input"))
    out["cache_write"] = tokens.get("cache_write", tokens.get("input"))
    out["image_input"] = tokens.get("image_input", tokens.get("input"))
    out["cached_image_input"] = tokens.get(
        "cached_image_input", tokens.get("image_input", out["cached_input"])
    )
    out["cached_audio_input"] = tokens.get("cached_audio_input", tokens.get("audio_input"))
    return out


@dataclass(frozen=True, slots=True)
class PlanSet:
    """The plan for ordinary calls and, where the entry has one, for long-context calls."""

    base: RatePlan
    long: RatePlan | None = None
    long_above: int | None = None


def tier_rates(
    entry: Entry, tier: str, *, fine_tuned: bool = False, long_context: bool = False
) -> tuple[RawRates | None, str]:
    """The listed-or-derived rates of one tier (no fallbacks), or ``None`` and why not."""
    factor = per_1m_factor(entry)
    explicit: dict[str, TierRates | None] = {}
    if fine_tuned:
        if entry.fine_tuned is None or not entry.fine_tuned.token_items():
            return None, f"no fine-tuned price for base model {entry.model}"
        standard = raw_rates(entry.fine_tuned, factor)
    else:
        standard = raw_rates(entry.standard, factor)
        explicit = {"batch": entry.batch, "flex": entry.flex, "scale": entry.scale}
    priority: TokenRates | None = None if fine_tuned else entry.priority
    if long_context:
        if entry.long_context is None or fine_tuned:
            return None, f"no long-context price for {entry.model}"
        standard = standard.with_tokens(raw_rates(entry.long_context.standard, factor).tokens)
        priority = entry.long_context.priority
        if tier == "priority" and priority is None:
            return None, f"no long-context priority price for {entry.model}"
    if tier == "standard":
        return standard, ""
    if tier in ("batch", "flex"):
        rates = standard.scaled(HALF)
        batch, flex = explicit.get("batch"), explicit.get("flex")
        if batch is not None:
            rates = rates.overlaid(raw_rates(batch, factor))
        if tier == "flex" and flex is not None:
            rates = rates.overlaid(raw_rates(flex, factor))
        return rates, ""
    block = priority if tier == "priority" else explicit.get(tier)
    if block is None:
        what = "fine-tuned " if fine_tuned else ""
        return None, f"no {tier}-tier price for {what}{entry.model}"
    return raw_rates(block, factor), ""


def compile_plans(entry: Entry, tier: str, *, fine_tuned: bool, ref_suffix: str = "") -> PlanSet:
    factor = per_1m_factor(entry)
    prefix = "ft:" if fine_tuned else ""
    ref = f"{prefix}{entry.key}/{tier}"
    training_tokens = training_hours = None
    if entry.fine_tuned is not None:
        if entry.fine_tuned.training_tokens is not None:
            training_tokens = tidy(entry.fine_tuned.training_tokens * factor)
        if entry.fine_tuned.training_hours is not None:
            training_hours = tidy(entry.fine_tuned.training_hours)
    defaults = entry.image_defaults
    model = f"{prefix}{entry.model}"

    def build(rates: RawRates | None, why: str, ref_text: str) -> RatePlan:
        tokens: tuple[Decimal | None, ...] = (None,) * len(TOKEN_DIMENSIONS)
        if rates is not None:
            full = _with_fallbacks(rates.tokens)
            tokens = tuple(full[d] for d in TOKEN_DIMENSIONS)
        return RatePlan(
            ref=ref_text,
            model=model,
            tier=tier,
            tokens=tokens,
            per_token=tuple(None if r is None else r.scaleb(-6) for r in tokens),
            token_billed=rates is not None and bool(rates.tokens),
            images=MappingProxyType(dict(rates.images)) if rates else _EMPTY_IMAGES,
            default_quality=defaults.quality if defaults else None,
            default_size=defaults.size if defaults else None,
            per_minute=rates.per_minute if rates else None,
            per_1m_characters=rates.per_1m_characters if rates else None,
            training_tokens=training_tokens,
            training_hours=training_hours,
            unavailable=None if rates is not None else why,
        )

    base_rates, why = tier_rates(entry, tier, fine_tuned=fine_tuned)
    base = build(base_rates, why, ref + ref_suffix)
    if entry.long_context is None or fine_tuned:
        return PlanSet(base)
    long_rates, long_why = tier_rates(entry, tier, long_context=True)
    long_plan = build(long_rates, long_why, f"{ref}/long-context{ref_suffix}")
    return PlanSet(base, long_plan, entry.long_context.above_input_tokens)
