"""Model resolution, tiers, long context, dated entries, overrides and unpriced outcomes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from pricing.book import PriceBook
from pricing.usage import Usage

D = Decimal
AT = datetime(2026, 11, 1, tzinfo=UTC)
CALL = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # listed snapshot
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2099-01-31", "gpt-4.1-mini"),  # unlisted dated snapshot
        ("gpt-5.2-20251211", "gpt-5.2"),  # compact date
        ("gpt-4-0613", "gpt-4"),  # longest prefix + version
        ("gpt-4-32k-0613", "gpt-4-32k"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot with its own price
        ("ft:gpt-4o-mini-2024-07-18:acme:support:9xYz", "ft:gpt-4o-mini"),
        ("ft:gpt-4.1-2025-04-14:acme::abc:ckpt-step-100", "ft:gpt-4.1"),
        ("gpt-4o-mini-2024-07-18.ft-0123abcd", "ft:gpt-4o-mini"),
        ("text-moderation-latest", "omni-moderation-latest"),
    ],
)
def test_names_resolve_to_catalog_models(book: PriceBook, name: str, canonical: str) -> None:
    assert book.canonical(name) == canonical
    assert canonical in book.models()


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-mini-search-preview",  # a variant, not a version: never the gpt-4o-mini price
        "gpt-4o-mini-bogus",
        "gpt-7",
        "claude-3-opus",
        "o3-deep-research",
        "",
    ],
)
def test_unknown_models_are_unpriced_never_guessed(book: PriceBook, name: str) -> None:
    cost = book.price(CALL, name, None, AT)
    assert cost.total is None
    assert cost.unpriced_reason
    assert book.canonical(name) is None


def test_no_model_is_unpriced(book: PriceBook) -> None:
    cost = book.price(CALL, None, None, AT)
    assert cost.total is None and cost.unpriced_reason == "no model"


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (None, "12.50"),  # 1M in at 2.50 + 1M out at 10.00
        ("default", "12.50"),
        ("auto", "12.50"),
        ("batch", "6.25"),
        ("flex", "6.25"),
        ("priority", "21.25"),
        ("fast", "21.25"),
    ],
)
def test_service_tiers_price_gpt_4o(book: PriceBook, tier: str | None, expected: str) -> None:
    assert book.price(CALL, "gpt-4o-2024-08-06", tier, AT).total == D(expected)


def test_priority_without_a_known_price_is_unpriced_not_standard(book: PriceBook) -> None:
    cost = book.price(CALL, "gpt-5-nano", "priority", AT)
    assert cost.total is None
    assert cost.unpriced_reason == "no priority-tier price for gpt-5-nano"
    assert cost.price_ref == "gpt-5-nano@2025-08-07/priority"


def test_scale_tier_is_unpriced_without_a_contract_rate(book: PriceBook) -> None:
    assert book.price(CALL, "gpt-4.1", "scale", AT).total is None
    contracted = PriceBook.load(
        overrides={"gpt-4.1": {"scale.input": D("1.5"), "scale.output": D("6")}}
    )
    cost = contracted.price(CALL, "gpt-4.1", "scale", AT)
    assert cost.total == D("7.5")
    assert cost.price_ref == "gpt-4.1@2025-04-14/scale+override"


def test_unknown_service_tier_is_unpriced(book: PriceBook) -> None:
    assert (
        book.price(CALL, "gpt-4.1", "turbo", AT).unpriced_reason == "unknown service tier 'turbo'"
    )


def test_fine_tuned_models_use_the_base_fine_tuned_rates(book: PriceBook) -> None:
    ft = "ft:gpt-4.1-mini-2025-04-14:acme::abc"
    assert book.price(CALL, ft, None, AT).total == D("4.00")  # 0.80 + 3.20
    assert book.price(CALL, ft, "batch", AT).total == D("2.00")
    assert book.price(CALL, ft, "priority", AT).total is None
    no_ft = book.price(CALL, "ft:davinci-002:acme::x", None, AT)
    assert no_ft.total is None
    assert no_ft.unpriced_reason == "no fine-tuned price for base model davinci-002"


def test_cached_tokens_are_taken_out_of_input_not_billed_twice(book: PriceBook) -> None:
    usage = Usage(input_tokens=2_000_000, cached_input_tokens=1_000_000, output_tokens=0)
    cost = book.price(usage, "gpt-4.1", None, AT)
    assert cost.total == D("2.50")  # 1M at 2.00 + 1M cached at 0.50
    assert {c.dimension: c.quantity for c in cost.components} == {
        "input": D(1_000_000),
        "cached_input": D(1_000_000),
    }


def test_reasoning_tokens_are_billed_as_output_once(book: PriceBook) -> None:
    plain = book.price(Usage(output_tokens=1000), "o3", None, AT)
    reasoning = book.price(Usage(output_tokens=1000, reasoning_tokens=800), "o3", None, AT)
    assert plain.total == reasoning.total == D("0.008")


def test_long_context_bills_the_whole_call_at_the_higher_rate(book: PriceBook) -> None:
    at_limit = Usage(input_tokens=272_000, output_tokens=1000)
    above = Usage(input_tokens=272_001, output_tokens=1000)
    assert book.price(at_limit, "gpt-5.4", None, AT).total == D("0.695")  # 0.68 + 0.015
    cost = book.price(above, "gpt-5.4", None, AT)
    assert cost.total == D("1.382505")  # 272001 * 5.00/1M + 1000 * 22.50/1M
    assert cost.price_ref == "gpt-5.4@2026-03-05/standard/long-context"
    assert book.price(above, "gpt-5.4", "batch", AT).total == D("0.6912525")
    long_priority = book.price(above, "gpt-5.4", "priority", AT)
    assert long_priority.total is None
    assert long_priority.unpriced_reason == "no long-context priority price for gpt-5.4"


def test_prices_are_looked_up_as_of_the_call(book: PriceBook) -> None:
    usage = Usage(input_tokens=1_000_000)
    before_cut = book.price(usage, "o3-2025-04-16", None, datetime(2025, 6, 9, 23, tzinfo=UTC))
    after_cut = book.price(usage, "o3-2025-04-16", None, datetime(2025, 6, 10, tzinfo=UTC))
    assert (before_cut.total, before_cut.price_ref) == (D("10.00"), "o3@2025-04-16/standard")
    assert (after_cut.total, after_cut.price_ref) == (D("2.00"), "o3@2025-06-10/standard")
    # a call at 01:00 on 10 June in UTC+05:00 is still 9 June in UTC
    local = datetime(2025, 6, 10, 1, tzinfo=timezone(timedelta(hours=5)))
    assert book.price(usage, "o3", None, local).total == D("10.00")


def test_no_price_before_a_model_existed(book: PriceBook) -> None:
    cost = book.price(CALL, "gpt-4.1", None, datetime(2024, 1, 1, tzinfo=UTC))
    assert cost.total is None
    assert cost.unpriced_reason == "no price for gpt-4.1 in effect on 2024-01-01"


def test_audio_tokens_are_priced_separately_from_text(book: PriceBook) -> None:
    usage = Usage(
        input_tokens=1100, audio_input_tokens=1000, output_tokens=2000, audio_output_tokens=1500
    )
    cost = book.price(usage, "gpt-realtime", None, AT)
    # text in 100 * 4 + audio in 1000 * 32 + text out 500 * 16 + audio out 1500 * 64, per 1M
    assert cost.total == D("0.1364")


def test_missing_audio_price_is_unpriced(book: PriceBook) -> None:
    usage = Usage(input_tokens=100, audio_input_tokens=50)
    cost = book.price(usage, "gpt-audio-mini", None, AT)
    assert cost.total is None
    assert cost.unpriced_reason == "no audio_input price for gpt-audio-mini (standard)"


def test_per_minute_per_character_and_per_image(book: PriceBook) -> None:
    whisper = book.price(Usage(units={"audio_seconds": D("8.47")}), "whisper-1", None, AT)
    assert whisper.total == D("0.000847")
    speech = book.price(Usage(units={"characters": D(4096)}), "tts-1-hd", None, AT)
    assert speech.total == D("0.12288")
    dalle = book.price(Usage(units={"image:hd:1792x1024": D(2)}), "dall-e-3", None, AT)
    assert dalle.total == D("0.24")
    default = book.price(Usage(units={"images": D(3)}), "dall-e-2", None, AT)
    assert default.total == D("0.06")  # DALL·E 2 default 1024x1024
    unknown_size = book.price(Usage(units={"image:high:auto": D(1)}), "gpt-image-1", None, AT)
    assert unknown_size.total is None


def test_per_minute_rates_are_rounded_to_ledger_precision(book: PriceBook) -> None:
    cost = book.price(Usage(units={"audio_seconds": D(1)}), "gpt-realtime-whisper", None, AT)
    assert cost.total == D("0.0002833333")  # 0.017 / 60, half-even at 10 places


def test_unit_only_models_with_only_tokens_are_unpriced(book: PriceBook) -> None:
    cost = book.price(Usage(input_tokens=20), "tts-1", None, AT)
    assert cost.total is None
    assert "priced per image, minute or character" in (cost.unpriced_reason or "")


def test_tool_fees_by_model_family(book: PriceBook) -> None:
    searches = Usage(input_tokens=0, units={"web_search_calls": D(1)})
    assert book.price(searches, "gpt-4o-mini", None, AT).total == D("0.025")
    assert book.price(searches, "o4-mini", None, AT).total == D("0.01")
    no_search_price = book.price(searches, "gpt-4.1-nano", None, AT)
    assert no_search_price.total is None
    assert (
        no_search_price.unpriced_reason
        == "no price for unit web_search_calls on gpt-4.1-nano (standard)"
    )
    files = Usage(units={"file_search_calls": D(2), "containers": D(1)})
    assert book.price(files, "gpt-5", None, AT).total == D("0.035")


def test_unknown_units_are_unpriced(book: PriceBook) -> None:
    cost = book.price(Usage(units={"video_seconds": D(4)}), "gpt-4.1", None, AT)
    assert cost.total is None


def test_moderation_is_an_explicit_zero(book: PriceBook) -> None:
    cost = book.price(Usage(input_tokens=500), "omni-moderation-2024-09-26", None, AT)
    assert cost.total == D(0) and cost.priced


def test_file_search_storage_subtracts_the_free_gigabyte(book: PriceBook) -> None:
    assert book.file_search_storage_cost(D("3.5"), D(2), date(2026, 1, 1)) == D("0.5")
    assert book.file_search_storage_cost(D("0.5"), D(30), date(2026, 1, 1)) == D(0)


def test_overrides_replace_rates_and_show_in_price_ref() -> None:
    book = PriceBook.load(
        overrides={
            "gpt-4o-mini": {"input": D("0.12"), "cached_input": D("0.06"), "output": D("0.50")}
        }
    )
    cost = book.price(CALL, "gpt-4o-mini-2024-07-18", None, AT)
    assert cost.total == D("0.62")
    assert cost.price_ref == "gpt-4o-mini@2024-07-18/standard+override"
    assert book.price(CALL, "gpt-4o-mini", "batch", AT).total == D("0.31")  # follows the override


def test_override_can_price_a_model_not_in_the_catalog() -> None:
    book = PriceBook.load(overrides={"my-finetune-proxy": {"input": D("1"), "output": D("2")}})
    assert book.price(CALL, "my-finetune-proxy", None, AT).total == D("3")
    assert "my-finetune-proxy" in book.models()


@pytest.mark.parametrize("key", ["inptu", "batch.training_hours", "per_image"])
def test_invalid_override_dimension_names_model_and_key(key: str) -> None:
    with pytest.raises(ValueError, match=rf"gpt-4o-mini.*{key}"):
        PriceBook.load(overrides={"gpt-4o-mini": {key: D(1)}})


def test_override_with_too_many_decimals_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 4 decimals"):
        PriceBook.load(overrides={"gpt-4o-mini": {"input": D("0.123456")}})


def test_discounts_global_and_per_model() -> None:
    book = PriceBook.load(discount_percent=D(10), model_discount_percent={"gpt-4.1": D("12.5")})
    mini = book.price(CALL, "gpt-4o-mini", None, AT)
    assert mini.total == D("0.675")
    assert mini.price_ref == "gpt-4o-mini@2024-07-18/standard-10%"
    full = book.price(CALL, "gpt-4.1-2025-04-14", None, AT)
    assert full.total == D("8.75")
    assert full.components[-1].dimension == "discount"
    assert sum(c.amount for c in full.components) == full.total


@pytest.mark.parametrize("pct", [D(-1), D(101)])
def test_discount_out_of_range_is_refused(pct: Decimal) -> None:
    with pytest.raises(ValueError, match="discount"):
        PriceBook.load(discount_percent=pct)


def test_override_of_a_per_1k_entry_is_per_1m_and_snapshot_names_work() -> None:
    book = PriceBook.load(
        overrides={"gpt-4o-2024-11-20": {"input": D("2.00")}},
        model_discount_percent={"gpt-4o-2024-08-06": D(50)},
    )
    cost = book.price(Usage(input_tokens=1_000_000), "gpt-4o", None, AT)
    assert cost.total == D("1.00")  # 2.00 per 1M (not per 1K), then 50% off
    assert cost.price_ref == "gpt-4o@2024-08-06/standard+override-50%"
