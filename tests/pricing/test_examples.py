"""Worked examples from the seeds reproduce: seed 002's cost table and gpt-image-1's per-image table."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest

from pricing.book import PriceBook
from pricing.usage import Usage

D = Decimal
AT = datetime(2026, 4, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


# Seed 002 "Real-World Cost Examples" (gpt-4o-mini): input, output, cost per request,
# per 1K requests, per 100K requests, exactly as printed (the first two columns are rounded).
SEED_002_EXAMPLES = [
    ("Chatbot reply", 500, 200, "0.0002", "0.20", "19.50"),
    ("Text classification", 300, 20, "0.0001", "0.06", "5.70"),
    ("Entity extraction", 800, 100, "0.0002", "0.18", "18.00"),
    ("Content routing", 200, 10, "0.00004", "0.04", "3.60"),
    ("Summarization (short doc)", 2000, 300, "0.0005", "0.48", "48.00"),
]


@pytest.mark.parametrize(
    ("name", "inp", "out", "per_call", "per_1k", "per_100k"), SEED_002_EXAMPLES
)
def test_seed_002_real_world_examples(
    book: PriceBook, name: str, inp: int, out: int, per_call: str, per_1k: str, per_100k: str
) -> None:
    cost = book.price(Usage(input_tokens=inp, output_tokens=out), "gpt-4o-mini", None, AT)
    assert cost.total is not None
    # the table rounds per-call and per-1K figures to the digits it prints; per 100K is exact
    assert (cost.total * 100_000) == D(per_100k)
    assert cost.total.quantize(D(per_call), ROUND_HALF_UP) == D(per_call)
    assert (cost.total * 1_000).quantize(D(per_1k), ROUND_HALF_UP) == D(per_1k)


def test_chatbot_reply_is_exactly_0_000195_per_call(book: PriceBook) -> None:
    cost = book.price(
        Usage(input_tokens=500, output_tokens=200), "gpt-4o-mini-2024-07-18", "default", AT
    )
    assert cost.total == D("0.000195")
    assert [(c.dimension, c.amount) for c in cost.components] == [
        ("input", D("0.000075")),
        ("output", D("0.00012")),
    ]


def test_seed_002_fine_tuning_training_examples(book: PriceBook) -> None:
    # "A training run on 10M tokens costs $3.00"; "100K training tokens costs about $0.03"
    ten_m = Usage(units={"training_tokens": D(10_000_000)})
    hundred_k = Usage(units={"training_tokens": D(100_000)})
    assert book.price(ten_m, "gpt-4o-mini-2024-07-18", None, AT).total == D("3.00")
    assert book.price(hundred_k, "gpt-4o-mini", None, AT).total == D("0.03")


# Output image tokens per image by quality and size, from OpenAI's image generation guide
# ("Cost and latency" table for GPT Image models): square 1024x1024, portrait 1024x1536,
# landscape 1536x1024.
IMAGE_TOKENS = {
    ("low", "1024x1024"): 272,
    ("medium", "1024x1024"): 1056,
    ("high", "1024x1024"): 4160,
    ("low", "1024x1536"): 408,
    ("medium", "1024x1536"): 1584,
    ("high", "1024x1536"): 6240,
    ("low", "1536x1024"): 400,
    ("medium", "1536x1024"): 1568,
    ("high", "1536x1024"): 6208,
}


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5"])
@pytest.mark.parametrize(("quality", "size"), list(IMAGE_TOKENS))
def test_image_token_prices_reproduce_the_per_image_table(
    book: PriceBook, model: str, quality: str, size: str
) -> None:
    tokens = IMAGE_TOKENS[(quality, size)]
    by_tokens = book.price(Usage(output_tokens=tokens, image_output_tokens=tokens), model, None, AT)
    by_table = book.price(Usage(units={f"image:{quality}:{size}": D(1)}), model, None, AT)
    assert by_tokens.total is not None and by_table.total is not None
    # the table prints 1-3 decimals: the token price is within one unit of its last digit
    # (the printed table is not consistently rounded: high 1024x1024 is 0.1664 by tokens, 0.167)
    last_digit = D(1).scaleb(by_table.total.as_tuple().exponent)
    assert abs(by_tokens.total - by_table.total) < last_digit


def test_image_tokens_win_over_the_per_image_table(book: PriceBook) -> None:
    usage = Usage(output_tokens=272, image_output_tokens=272, units={"image:low:1024x1024": D(1)})
    cost = book.price(usage, "gpt-image-1", None, AT)
    assert cost.total == D("0.01088")  # tokens only, the image is not billed twice
