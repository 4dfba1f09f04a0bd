"""Properties of what-if re-pricing: summing linear calls prices exactly as one by one; a lever
that changes nothing costs nothing; savings are never negative; any lever text parses or is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.book import PriceBook
from pricing.usage import Usage
from pricing.whatif import Calls, Lever, LeverError, parse_levers, reprice, savings

BOOK = PriceBook.load()
FLOOR = BOOK.long_context_floor() or 10**9
MODELS = (
    "gpt-4o-mini",
    "gpt-4.1-nano",
    "o3",
    "gpt-5",
    "gpt-5.4",
    "gpt-4o",
    "gpt-4o-audio-preview",
    "gpt-4o-realtime-preview",
    "text-embedding-3-small",
    "ft:gpt-4o-mini:acme::x",
)
TIERS = (None, "default", "batch", "flex", "priority", "scale")
DAYS = st.integers(0, 700).map(lambda d: datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=d))


@st.composite
def linear_usage(draw: st.DrawFn) -> Usage:
    """Usage whose buckets never clamp: subsets fit inside the totals, no units, input <= floor."""
    total_in = draw(st.integers(0, min(FLOOR, 300_000)))
    cached = draw(st.integers(0, total_in))
    audio_in = draw(st.integers(0, total_in - cached))
    image_in = draw(st.integers(0, total_in - cached - audio_in))
    total_out = draw(st.integers(0, 100_000))
    audio_out = draw(st.integers(0, total_out))
    return Usage(
        input_tokens=total_in,
        cached_input_tokens=cached,
        audio_input_tokens=draw(st.sampled_from([0, audio_in])),
        image_input_tokens=draw(st.sampled_from([0, image_in])),
        output_tokens=total_out,
        audio_output_tokens=draw(st.sampled_from([0, audio_out])),
        reasoning_tokens=draw(st.integers(0, total_out)),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(linear_usage(), min_size=1, max_size=6),
    st.sampled_from(MODELS),
    st.sampled_from(TIERS),
    DAYS,
)
def test_price_of_the_sum_is_the_sum_of_the_prices(
    usages: list[Usage], model: str, tier: str | None, at: datetime
) -> None:
    each = [BOOK.price(u, model, tier, at) for u in usages]
    total = usages[0]
    for usage in usages[1:]:
        total = total + usage
    summed = BOOK.price_sum(total, model, tier, at)
    if all(c.total is not None for c in each):
        assert summed.total == sum((c.total for c in each if c.total is not None), Decimal(0))
    else:
        assert summed.total is None


@settings(max_examples=200, deadline=None)
@given(linear_usage(), st.sampled_from(MODELS[:6]), st.sampled_from(TIERS[:5]), DAYS)
def test_a_lever_that_changes_nothing_costs_the_same(
    usage: Usage, model: str, tier: str | None, at: datetime
) -> None:
    actual = BOOK.price(usage, model, tier, at)
    calls = Calls(usage, model, tier, "chat.completions", at)
    own_tier = {None: "standard", "default": "standard"}.get(tier, tier)
    assert own_tier is not None
    for lever in (Lever("model", model), Lever("tier", own_tier)):
        result = reprice(BOOK, lever, calls)
        assert result.cost == actual.total
        if result.cost is None:
            assert result.reason


@settings(max_examples=200, deadline=None)
@given(linear_usage(), st.sampled_from(MODELS), st.sampled_from(TIERS), DAYS)
def test_savings_are_never_negative(
    usage: Usage, model: str, tier: str | None, at: datetime
) -> None:
    for amount in savings(BOOK, Calls(usage, model, tier, "responses", at)).values():
        assert amount >= 0


@given(st.lists(st.text(max_size=80), max_size=4))
def test_any_lever_text_parses_or_is_refused_by_name(texts: list[str]) -> None:
    try:
        levers = parse_levers(texts, BOOK)
    except LeverError as exc:
        assert str(exc)
    else:
        for lever in levers:
            assert lever.kind in ("model", "tier")
