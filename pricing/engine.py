"""Cost arithmetic: (usage, rate plan, tool fees, discount) -> :class:`Cost`. Pure and exact.

Money is ``Decimal`` throughout, computed in a local 50-digit context. The ledger stores costs as
``NUMERIC(20,10)``: every catalog token rate has at most 4 decimals per 1M tokens (checked at load),
so a token component is an integer times a rate with at most 10 decimals and is exact in 10
decimal places. Amounts that would need more places – per-minute audio rates applied to seconds,
and percentage discounts – are rounded half-even to 10 decimal places, and the rounding is part of
the component amounts, so ``total == sum(component.amount)`` always holds exactly.

How usage splits into billed buckets (``input_tokens`` and ``output_tokens`` are totals):

* cached = ``cached_input_tokens`` (of which ``units['cached_audio_input_tokens']`` and
  ``units['cached_image_input_tokens']`` are audio and image); cached tokens are taken *out of*
  input and billed once, at the cached rate;
* text input = input − cached − cache_write − uncached audio − uncached image input;
* text output = output − audio output − image output (reasoning and prediction tokens are already
  inside output and billed as output).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

from pricing.cost import Cost, CostComponent
from pricing.plan import RatePlan
from pricing.schema import TOKEN_DIMENSIONS
from pricing.usage import Usage

CONTEXT: Final = Context(prec=50, rounding=ROUND_HALF_EVEN)
LEDGER_PLACES: Final = Decimal("1E-10")
PER_1M: Final = Decimal(1_000_000)
ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)
_SIXTY: Final = Decimal(60)
_ONE: Final = Decimal(1)

SUBSET_UNITS: Final[frozenset[str]] = frozenset(
    {"cached_audio_input_tokens", "cached_image_input_tokens"}
)
"""Units that only split token counts (never billed by themselves)."""


@dataclass(frozen=True, slots=True)
class ToolRate:
    """A built-in tool fee resolved for one model and date."""

    unit: str
    rate: Decimal
    per: Decimal
    ref: str


def _fit(amount: Decimal) -> Decimal:
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -10:
        return amount.quantize(LEDGER_PLACES, context=CONTEXT)
    return amount


def token_buckets(usage: Usage) -> tuple[int, ...]:
    """Billed token quantities in :data:`TOKEN_DIMENSIONS` order (never negative)."""
    units = usage.units
    cached_audio = int(units.get("cached_audio_input_tokens", 0)) if units else 0
    cached_image = int(units.get("cached_image_input_tokens", 0)) if units else 0
    cached = usage.cached_input_tokens
    audio_in = usage.audio_input_tokens - cached_audio
    image_in = usage.image_input_tokens - cached_image
    if audio_in < 0:
        audio_in = 0
    if image_in < 0:
        image_in = 0
    text_in = usage.input_tokens - cached - usage.cache_write_tokens - audio_in - image_in
    text_out = usage.output_tokens - usage.audio_output_tokens - usage.image_output_tokens
    cached_text = cached - cached_audio - cached_image
    return (
        text_in if text_in > 0 else 0,
        cached_text if cached_text > 0 else 0,
        usage.cache_write_tokens,
        text_out if text_out > 0 else 0,
        audio_in,
        cached_audio,
        usage.audio_output_tokens,
        image_in,
        cached_image,
        usage.image_output_tokens,
    )


def _has_tokens(usage: Usage) -> bool:
    return bool(
        usage.input_tokens
        or usage.output_tokens
        or usage.cached_input_tokens
        or usage.cache_write_tokens
        or usage.audio_input_tokens
        or usage.audio_output_tokens
        or usage.image_input_tokens
        or usage.image_output_tokens
    )


def _unpriced(plan: RatePlan, reason: str) -> Cost:
    return Cost(total=None, price_ref=plan.ref, unpriced_reason=reason)


def _image_rate(plan: RatePlan, key: str) -> tuple[str, Decimal | None]:
    if key == "images":
        quality, size = "", ""
    else:
        parts = key.split(":", 2)
        quality = parts[1].strip().lower() if len(parts) > 1 else ""
        size = parts[2].replace(" ", "").lower() if len(parts) > 2 else ""
    if quality in ("", "auto") and plan.default_quality:
        quality = plan.default_quality
    if size in ("", "auto") and plan.default_size:
        size = plan.default_size
    return f"image:{quality}:{size}", plan.images.get((quality, size))


def compute_cost(
    usage: Usage,
    plan: RatePlan,
    tools: Mapping[str, ToolRate] | None = None,
    discount_percent: Decimal = ZERO,
) -> Cost:
    """Price ``usage`` with ``plan``. Unpriced (``total=None``) with a reason when any billed
    quantity has no price: never a partial or silent $0."""
    if plan.unavailable is not None:
        return _unpriced(plan, plan.unavailable)
    ctx = CONTEXT
    components: list[CostComponent] = []
    total = ZERO
    if plan.token_billed:
        per_token = plan.per_token
        multiply = ctx.multiply
        add = ctx.add
        for index, quantity in enumerate(token_buckets(usage)):
            if not quantity:
                continue
            unit_rate = per_token[index]
            if unit_rate is None:
                dimension = TOKEN_DIMENSIONS[index]
                return _unpriced(plan, f"no {dimension} price for {plan.model} ({plan.tier})")
            count = Decimal(quantity)  # exact; multiplying two Decimals skips an int conversion
            amount = multiply(unit_rate, count)
            total = add(total, amount)
            components.append(
                CostComponent(
                    TOKEN_DIMENSIONS[index], count, plan.tokens[index] or ZERO, PER_1M, amount
                )
            )
    billed_units = False
    for key, count in usage.units.items():
        if not count or key in SUBSET_UNITS:
            continue
        rate: Decimal | None
        per = _ONE
        dimension = key
        if key == "images" or key.startswith("image:"):
            if usage.image_output_tokens and plan.tokens[TOKEN_DIMENSIONS.index("image_output")]:
                continue  # the image tokens above already bill these images
            dimension, rate = _image_rate(plan, key)
        elif key == "audio_seconds":
            rate, per = plan.per_minute, _SIXTY
        elif key == "characters":
            rate, per = plan.per_1m_characters, PER_1M
        elif key == "training_tokens":
            rate, per = plan.training_tokens, PER_1M
        elif key == "training_hours":
            rate = plan.training_hours
        elif tools is not None and key in tools:
            tool = tools[key]
            rate, per = tool.rate, tool.per
        else:
            rate = None
        if rate is None:
            return _unpriced(plan, f"no price for unit {dimension} on {plan.model} ({plan.tier})")
        amount = _fit(ctx.divide(ctx.multiply(count, rate), per))
        total = ctx.add(total, amount)
        components.append(CostComponent(dimension, count, rate, per, amount))
        billed_units = True
    if not plan.token_billed and not billed_units and _has_tokens(usage):
        return _unpriced(
            plan, f"{plan.model} is priced per image, minute or character; the usage reports none"
        )
    ref = plan.ref
    if discount_percent:
        net = _fit(ctx.divide(ctx.multiply(total, _HUNDRED - discount_percent), _HUNDRED))
        components.append(
            CostComponent("discount", total, discount_percent, _HUNDRED, ctx.subtract(net, total))
        )
        total = net
        ref = f"{ref}-{discount_percent.normalize():f}%"
    return Cost(total=total, price_ref=ref, components=tuple(components))
