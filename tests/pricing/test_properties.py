"""Properties of the cost engine over generated usage (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.book import PriceBook
from pricing.plan import TIERS
from pricing.usage import TOKEN_FIELDS, Usage

AT = datetime(2026, 11, 1, tzinfo=UTC)
BOOK = PriceBook.load()  # read-only; loading once keeps the examples fast

# token-priced models covering text, cached, cache-write, audio, image and long-context rates
MODELS = [
    "gpt-4o-mini",
    "gpt-4.1",
    "o3",
    "gpt-5.4",
    "gpt-5.6-sol",
    "gpt-realtime",
    "gpt-4o-audio-preview",
    "gpt-image-1",
    "gpt-image-1.5",
    "text-embedding-3-small",
    "ft:gpt-4o-mini-2024-07-18:acme::x",
    "gpt-3.5-turbo-0613",
]
small = st.integers(min_value=0, max_value=200_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    """Disjoint token kinds combined into OpenAI's totals, so every Usage is consistent."""
    text_in, cached_text, cache_write = draw(small), draw(small), draw(small)
    audio_in, cached_audio, image_in, cached_image = (
        draw(small),
        draw(small),
        draw(small),
        draw(small),
    )
    text_out, audio_out, image_out = draw(small), draw(small), draw(small)
    reasoning = draw(st.integers(min_value=0, max_value=text_out))
    units: dict[str, Decimal] = {}
    if cached_audio:
        units["cached_audio_input_tokens"] = Decimal(cached_audio)
    if cached_image:
        units["cached_image_input_tokens"] = Decimal(cached_image)
    return Usage(
        input_tokens=text_in
        + cached_text
        + cache_write
        + audio_in
        + cached_audio
        + image_in
        + cached_image,
        cached_input_tokens=cached_text + cached_audio + cached_image,
        cache_write_tokens=cache_write,
        audio_input_tokens=audio_in + cached_audio,
        image_input_tokens=image_in + cached_image,
        output_tokens=text_out + audio_out + image_out,
        reasoning_tokens=reasoning,
        audio_output_tokens=audio_out,
        image_output_tokens=image_out,
        units=units,
    )


models = st.sampled_from(MODELS)
tiers = st.sampled_from(["standard", "batch", "flex", "default", None])


def places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@settings(max_examples=300)
@given(usages(), models, tiers)
def test_cost_is_non_negative_exact_and_sums_its_components(
    usage: Usage, model: str, tier: str | None
) -> None:
    cost = BOOK.price(usage, model, tier, AT)
    if cost.total is None:
        assert cost.unpriced_reason
        return
    assert cost.total >= 0
    assert sum((c.amount for c in cost.components), Decimal(0)) == cost.total
    assert places(cost.total) <= 10  # fits NUMERIC(20,10) without rounding


@settings(max_examples=300)
@given(usages(), usages(), models, tiers)
def test_cost_is_additive_over_usage(a: Usage, b: Usage, model: str, tier: str | None) -> None:
    pa, pb, pab = (BOOK.price(u, model, tier, AT) for u in (a, b, a + b))
    if model in ("gpt-5.4", "gpt-5.6-sol") and (a + b).input_tokens > 272_000:
        return  # above the long-context threshold the whole call changes rate: not additive
    if pa.total is not None and pb.total is not None:
        assert pab.total == pa.total + pb.total


KINDS = {
    "text_input": Usage(input_tokens=1),
    "cached_input": Usage(input_tokens=1, cached_input_tokens=1),
    "cache_write": Usage(input_tokens=1, cache_write_tokens=1),
    "audio_input": Usage(input_tokens=1, audio_input_tokens=1),
    "image_input": Usage(input_tokens=1, image_input_tokens=1),
    "text_output": Usage(output_tokens=1),
    "reasoning": Usage(output_tokens=1, reasoning_tokens=1),
    "audio_output": Usage(output_tokens=1, audio_output_tokens=1),
    "image_output": Usage(output_tokens=1, image_output_tokens=1),
}


@settings(max_examples=300)
@given(
    usages(),
    models,
    tiers,
    st.sampled_from(sorted(KINDS)),
    st.integers(min_value=1, max_value=300_000),
)
def test_cost_is_monotone_in_every_token_count(
    usage: Usage, model: str, tier: str | None, kind: str, count: int
) -> None:
    delta = Usage(**{f: getattr(KINDS[kind], f) * count for f in TOKEN_FIELDS})
    before, after = BOOK.price(usage, model, tier, AT), BOOK.price(usage + delta, model, tier, AT)
    if before.total is not None and after.total is not None:
        assert after.total >= before.total


def test_crossing_the_long_context_threshold_never_lowers_the_cost() -> None:
    for tokens in (271_999, 272_000, 272_001, 272_002):
        lower = BOOK.price(Usage(input_tokens=tokens), "gpt-5.4", None, AT).total
        higher = BOOK.price(Usage(input_tokens=tokens + 1), "gpt-5.4", None, AT).total
        assert lower is not None and higher is not None and higher > lower


def test_every_compiled_rate_keeps_costs_within_10_decimal_places() -> None:
    checked = 0
    for entry in BOOK.entries():
        for fine_tuned in (False, True):
            for tier, plans in BOOK.plans(entry, fine_tuned=fine_tuned).items():
                for plan in (plans.base, plans.long):
                    if plan is None:
                        continue
                    for rate in plan.per_token:
                        if rate is not None:
                            checked += 1
                            assert places(rate) <= 10, (entry.key, tier, rate)
    assert checked > 1000
    assert set(TIERS) == {"standard", "batch", "flex", "priority", "scale"}
