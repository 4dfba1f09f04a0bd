"""Every price row of the seed documents, transcribed here, priced through the catalog and engine.

Each row: (seed, model, tier, dimension, rate, unit). The test prices exactly one unit block
(1M or 1K tokens, one image, 1K tool calls, ...) of that dimension and expects exactly the rate.
Seeds (the product's pricing documents; tests never read them from disk):

* 000 – https://openai.com/api/pricing/ (official API pricing page, mid 2025)
* 001 – OpenAI API pricing table "updated to January 8, 2025" (USD per 1K tokens)
* 002 – third-party article "GPT-4o Mini Pricing" (April 2026)
* 003 – https://platform.openai.com/docs/pricing (image model, DALL·E and embeddings tables)
* 004 – https://platform.openai.com/docs/models/gpt-4o-mini (official model page)
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pricing.book import PriceBook
from pricing.usage import Usage

D = Decimal
AFTER_ALL_SEEDS = datetime(2026, 11, 1, tzinfo=UTC)
SEED_001_DATE = datetime(2025, 1, 8, 12, tzinfo=UTC)


def usage_for(dimension: str, n: int) -> Usage:
    """``n`` units of one billed dimension, with OpenAI's totals filled in consistently."""
    tokens: dict[str, dict[str, int]] = {
        "input": {"input_tokens": n},
        "cached_input": {"input_tokens": n, "cached_input_tokens": n},
        "output": {"output_tokens": n},
        "audio_input": {"input_tokens": n, "audio_input_tokens": n},
        "audio_output": {"output_tokens": n, "audio_output_tokens": n},
        "image_input": {"input_tokens": n, "image_input_tokens": n},
        "cached_image_input": {
            "input_tokens": n,
            "image_input_tokens": n,
            "cached_input_tokens": n,
        },
        "image_output": {"output_tokens": n, "image_output_tokens": n},
    }
    if dimension in tokens:
        units = {"cached_image_input_tokens": D(n)} if dimension == "cached_image_input" else {}
        return Usage(**tokens[dimension], units=units)
    return Usage(units={dimension: D(n)})


# (seed, model as named in the seed, tier, dimension, USD, per how many units)
M, K = 1_000_000, 1_000
SEED_000 = [
    ("000", "gpt-4.1", "standard", "input", "2.00", M),
    ("000", "gpt-4.1", "standard", "cached_input", "0.50", M),
    ("000", "gpt-4.1", "standard", "output", "8.00", M),
    ("000", "gpt-4.1-mini", "standard", "input", "0.40", M),
    ("000", "gpt-4.1-mini", "standard", "cached_input", "0.10", M),
    ("000", "gpt-4.1-mini", "standard", "output", "1.60", M),
    ("000", "gpt-4.1-nano", "standard", "input", "0.100", M),
    ("000", "gpt-4.1-nano", "standard", "cached_input", "0.025", M),
    ("000", "gpt-4.1-nano", "standard", "output", "0.400", M),
    ("000", "o3", "standard", "input", "2.00", M),
    ("000", "o3", "standard", "cached_input", "0.50", M),
    ("000", "o3", "standard", "output", "8.00", M),
    ("000", "o4-mini", "standard", "input", "1.100", M),
    ("000", "o4-mini", "standard", "cached_input", "0.275", M),
    ("000", "o4-mini", "standard", "output", "4.400", M),
    # "Save 50% on inputs and outputs with the Batch API"
    ("000", "gpt-4.1", "batch", "input", "1.00", M),
    ("000", "gpt-4.1", "batch", "output", "4.00", M),
    ("000", "o4-mini", "batch", "input", "0.55", M),
    ("000", "o4-mini", "batch", "output", "2.20", M),
    # fine-tuning
    ("000", "ft:gpt-4.1-2025-04-14:acme::abc123", "standard", "input", "3.00", M),
    ("000", "ft:gpt-4.1-2025-04-14:acme::abc123", "standard", "cached_input", "0.75", M),
    ("000", "ft:gpt-4.1-2025-04-14:acme::abc123", "standard", "output", "12.00", M),
    ("000", "gpt-4.1-2025-04-14", "standard", "training_tokens", "25.00", M),
    ("000", "ft:gpt-4.1-mini-2025-04-14:acme::abc", "standard", "input", "0.80", M),
    ("000", "ft:gpt-4.1-mini-2025-04-14:acme::abc", "standard", "cached_input", "0.20", M),
    ("000", "ft:gpt-4.1-mini-2025-04-14:acme::abc", "standard", "output", "3.20", M),
    ("000", "gpt-4.1-mini", "standard", "training_tokens", "5.00", M),
    ("000", "ft:gpt-4.1-nano-2025-04-14:acme:x:abc", "standard", "input", "0.20", M),
    ("000", "ft:gpt-4.1-nano-2025-04-14:acme:x:abc", "standard", "cached_input", "0.05", M),
    ("000", "ft:gpt-4.1-nano-2025-04-14:acme:x:abc", "standard", "output", "0.80", M),
    ("000", "gpt-4.1-nano", "standard", "training_tokens", "1.50", M),
    ("000", "ft:o4-mini-2025-04-16:acme::rft1", "standard", "input", "4.00", M),
    ("000", "ft:o4-mini-2025-04-16:acme::rft1", "standard", "cached_input", "1.00", M),
    ("000", "ft:o4-mini-2025-04-16:acme::rft1", "standard", "output", "16.00", M),
    ("000", "o4-mini", "standard", "training_hours", "100.00", 1),
    # Realtime API, text
    ("000", "gpt-4o-realtime-preview", "standard", "input", "5.00", M),
    ("000", "gpt-4o-realtime-preview", "standard", "cached_input", "2.50", M),
    ("000", "gpt-4o-realtime-preview", "standard", "output", "20.00", M),
    ("000", "gpt-4o-mini-realtime-preview", "standard", "input", "0.60", M),
    ("000", "gpt-4o-mini-realtime-preview", "standard", "cached_input", "0.30", M),
    ("000", "gpt-4o-mini-realtime-preview", "standard", "output", "2.40", M),
    # Image Generation API
    ("000", "gpt-image-1", "standard", "input", "5.00", M),
    ("000", "gpt-image-1", "standard", "cached_input", "1.25", M),
    ("000", "gpt-image-1", "standard", "image_input", "10.00", M),
    ("000", "gpt-image-1", "standard", "cached_image_input", "2.50", M),
    ("000", "gpt-image-1", "standard", "image_output", "40.00", M),
    # Built-in tools
    ("000", "gpt-4.1", "standard", "containers", "0.03", 1),
    ("000", "gpt-4.1", "standard", "file_search_calls", "2.50", K),
    ("000", "gpt-4.1", "standard", "file_search_storage_gb_days", "0.10", 1),
    ("000", "gpt-4o", "standard", "web_search_calls", "25.00", K),
    ("000", "gpt-4o-mini", "standard", "web_search_calls", "25.00", K),
    ("000", "gpt-4.1", "standard", "web_search_calls", "25.00", K),
    ("000", "gpt-4.1-mini", "standard", "web_search_calls", "25.00", K),
    ("000", "o3", "standard", "web_search_calls", "10.00", K),
    ("000", "o4-mini", "standard", "web_search_calls", "10.00", K),
    ("000", "o3-pro", "standard", "web_search_calls", "10.00", K),
    ("000", "o4-mini-deep-research", "standard", "web_search_calls", "10.00", K),
]

# Seed 001, per 1K tokens. Columns: input, batch input, cached input, output, batch output,
# text input, text output, audio input, audio output ("" = empty cell).
SEED_001_TABLE = """
gpt-4o                               | 0.00250  | 0.00125  | 0.00125  | 0.01000  | 0.00500  |          |          |          |
gpt-4o-2024-11-20                    | 0.00250  | 0.00125  | 0.00125  | 0.01000  | 0.00500  |          |          |          |
gpt-4o-2024-08-06                    | 0.00250  | 0.00125  | 0.00125  | 0.01000  | 0.00500  |          |          |          |
gpt-4o-audio-preview                 |          |          |          |          |          | 0.00250  | 0.01000  | 0.10000  | 0.20000
gpt-4o-audio-preview-2024-12-17      |          |          |          |          |          | 0.00250  | 0.01000  | 0.04000  | 0.08000
gpt-4o-audio-preview-2024-10-01      |          |          |          |          |          | 0.00250  | 0.01000  | 0.10000  | 0.20000
gpt-4o-2024-05-13                    | 0.00500  | 0.00250  |          | 0.01500  | 0.00750  |          |          |          |
gpt-4o-mini                          | 0.000150 | 0.000075 | 0.000075 | 0.000600 | 0.000300 |          |          |          |
gpt-4o-mini-2024-07-18               | 0.000150 | 0.000075 | 0.000075 | 0.000600 | 0.000300 |          |          |          |
gpt-4o-mini-audio-preview            |          |          |          |          |          | 0.000150 | 0.000600 | 0.010000 | 0.020000
gpt-4o-mini-audio-preview-2024-12-17 |          |          |          |          |          | 0.000150 | 0.000600 | 0.010000 | 0.020000
o1                                   | 0.0150   |          | 0.0075   | 0.0600   |          |          |          |          |
o1-2024-12-17                        | 0.0150   |          | 0.0075   | 0.0600   |          |          |          |          |
o1-preview                           | 0.0150   |          | 0.0075   | 0.0600   |          |          |          |          |
o1-preview-2024-09-12                | 0.0150   |          | 0.0075   | 0.0600   |          |          |          |          |
o1-mini                              | 0.0030   |          | 0.0015   | 0.0120   |          |          |          |          |
o1-mini-2024-09-12                   | 0.0030   |          | 0.0015   | 0.0120   |          |          |          |          |
chatgpt-4o-latest                    | 0.0050   |          |          | 0.0150   |          |          |          |          |
gpt-4-turbo                          | 0.0100   |          |          | 0.0300   |          |          |          |          |
gpt-4-turbo-2024-04-09               | 0.0100   |          |          | 0.0300   |          |          |          |          |
gpt-4                                | 0.0300   |          |          | 0.0600   |          |          |          |          |
gpt-4-32k                            | 0.0600   |          |          | 0.1200   |          |          |          |          |
gpt-4-0125-preview                   | 0.0100   |          |          | 0.0300   |          |          |          |          |
gpt-4-1106-preview                   | 0.0100   |          |          | 0.0300   |          |          |          |          |
gpt-4-vision-preview                 | 0.0100   |          |          | 0.0300   |          |          |          |          |
gpt-3.5-turbo-0125                   | 0.0005   |          |          | 0.0015   |          |          |          |          |
gpt-3.5-turbo-instruct               | 0.0015   |          |          | 0.0020   |          |          |          |          |
gpt-3.5-turbo-1106                   | 0.0010   |          |          | 0.0020   |          |          |          |          |
gpt-3.5-turbo-0613                   | 0.0015   |          |          | 0.0020   |          |          |          |          |
gpt-3.5-turbo-16k-0613               | 0.0030   |          |          | 0.0040   |          |          |          |          |
gpt-3.5-turbo-0301                   | 0.0015   |          |          | 0.0020   |          |          |          |          |
davinci-002                          | 0.0020   |          |          | 0.0020   |          |          |          |          |
babbage-002                          | 0.0004   |          |          | 0.0004   |          |          |          |          |
"""
_001_COLUMNS = [
    ("standard", "input"),
    ("batch", "input"),
    ("standard", "cached_input"),
    ("standard", "output"),
    ("batch", "output"),
    ("standard", "input"),
    ("standard", "output"),
    ("standard", "audio_input"),
    ("standard", "audio_output"),
]


def _seed_001_rows() -> list[tuple[str, str, str, str, str, int]]:
    rows = []
    for line in SEED_001_TABLE.strip().splitlines():
        cells = [c.strip() for c in line.split("|")]
        model, values = cells[0], cells[1:]
        for (tier, dimension), value in zip(_001_COLUMNS, values, strict=False):
            if value:
                rows.append(("001", model, tier, dimension, value, K))
    return rows


SEED_002 = [
    ("002", "gpt-4o-mini", "standard", "input", "0.15", M),
    ("002", "gpt-4o-mini", "standard", "cached_input", "0.075", M),
    ("002", "gpt-4o-mini", "standard", "output", "0.60", M),
    ("002", "gpt-4o-mini", "batch", "input", "0.075", M),
    ("002", "gpt-4o-mini", "batch", "output", "0.30", M),
    ("002", "gpt-4o-mini", "batch", "cached_input", "0.075", M),  # "Cached + Batch $0.075"
    ("002", "ft:gpt-4o-mini-2024-07-18:acme::x1", "standard", "input", "0.30", M),
    ("002", "ft:gpt-4o-mini-2024-07-18:acme::x1", "standard", "cached_input", "0.15", M),
    ("002", "ft:gpt-4o-mini-2024-07-18:acme::x1", "standard", "output", "1.20", M),
    ("002", "gpt-4o-mini-2024-07-18", "standard", "training_tokens", "0.30", M),
    ("002", "gpt-4.1-nano", "standard", "input", "0.10", M),
    ("002", "gpt-4.1-nano", "standard", "output", "0.40", M),
    ("002", "gpt-4.1-nano", "batch", "input", "0.05", M),
    ("002", "gpt-4.1-nano", "batch", "output", "0.20", M),
    ("002", "gpt-4o", "standard", "input", "2.50", M),
    ("002", "gpt-4o", "standard", "output", "10.00", M),
]

_003_IMAGES = {
    "gpt-image-1.5": {
        "low": ("0.009", "0.013"),
        "medium": ("0.034", "0.05"),
        "high": ("0.133", "0.2"),
    },
    "chatgpt-image-latest": {
        "low": ("0.009", "0.013"),
        "medium": ("0.034", "0.05"),
        "high": ("0.133", "0.2"),
    },
    "gpt-image-1": {
        "low": ("0.011", "0.016"),
        "medium": ("0.042", "0.063"),
        "high": ("0.167", "0.25"),
    },
    "gpt-image-1-mini": {
        "low": ("0.005", "0.006"),
        "medium": ("0.011", "0.015"),
        "high": ("0.036", "0.052"),
    },
}


def _seed_003_rows() -> list[tuple[str, str, str, str, str, int]]:
    rows = []
    for model, qualities in _003_IMAGES.items():
        for quality, (square, tall) in qualities.items():
            rows.append(("003", model, "standard", f"image:{quality}:1024x1024", square, 1))
            rows.append(("003", model, "standard", f"image:{quality}:1024x1536", tall, 1))
            rows.append(("003", model, "standard", f"image:{quality}:1536x1024", tall, 1))
    for quality, (square, wide) in {"standard": ("0.04", "0.08"), "hd": ("0.08", "0.12")}.items():
        rows.append(("003", "dall-e-3", "standard", f"image:{quality}:1024x1024", square, 1))
        rows.append(("003", "dall-e-3", "standard", f"image:{quality}:1024x1792", wide, 1))
        rows.append(("003", "dall-e-3", "standard", f"image:{quality}:1792x1024", wide, 1))
    for size, price in {"256x256": "0.016", "512x512": "0.018", "1024x1024": "0.02"}.items():
        rows.append(("003", "dall-e-2", "standard", f"image:standard:{size}", price, 1))
    rows += [
        ("003", "text-embedding-3-small", "standard", "input", "0.02", M),
        ("003", "text-embedding-3-small", "batch", "input", "0.01", M),
        ("003", "text-embedding-3-large", "standard", "input", "0.13", M),
        ("003", "text-embedding-3-large", "batch", "input", "0.065", M),
    ]
    return rows


SEED_004 = [
    (seed, model, "standard", dimension, rate, M)
    for seed, (dimension, rate) in [
        ("004", ("input", "0.15")),
        ("004", ("cached_input", "0.075")),
        ("004", ("output", "0.60")),
    ]
    for model in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
]

ALL_ROWS = SEED_000 + _seed_001_rows() + SEED_002 + _seed_003_rows() + SEED_004


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


@pytest.mark.parametrize(
    ("seed", "model", "tier", "dimension", "rate", "per"),
    ALL_ROWS,
    ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[3]}" for r in ALL_ROWS],
)
def test_every_seed_price_is_reproduced_exactly(
    book: PriceBook, seed: str, model: str, tier: str, dimension: str, rate: str, per: int
) -> None:
    at = SEED_001_DATE if seed == "001" else AFTER_ALL_SEEDS
    cost = book.price(usage_for(dimension, per), model, tier, at)
    assert cost.unpriced_reason is None, cost.unpriced_reason
    assert cost.total == D(rate)
    assert cost.price_ref is not None


def test_the_seed_tables_are_all_transcribed() -> None:
    # a guard against a table quietly losing rows: counts of the seed tables' priced cells
    assert len(SEED_001_TABLE.strip().splitlines()) == 33
    assert len(_seed_001_rows()) == 99
    assert len(_seed_003_rows()) == 36 + 6 + 3 + 4
