"""Compare the catalog with the third-party ``genai-prices`` package (optional extra ``check``).

Only overlapping data is compared: a model both know, a tier genai-prices has a variant for
(standard always), and a token dimension both price. genai-prices reads its bundled snapshot (no
network).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from pricing.book import PriceBook
from pricing.plan import tier_rates

THEIR_FIELDS: Final[dict[str, str]] = {
    "input": "input_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "output": "output_mtok",
    "audio_input": "input_audio_mtok",
    "cached_audio_input": "cache_audio_read_mtok",
    "audio_output": "output_audio_mtok",
    "image_input": "input_image_mtok",
    "cached_image_input": "cache_image_read_mtok",
    "image_output": "output_image_mtok",
}
TIER_CONTEXTS: Final[dict[str, dict[str, str] | None]] = {
    "standard": None,
    "batch": {"processing": "batch"},
    "flex": {"service_tier": "flex"},
    "priority": {"service_tier": "priority"},
}


class CheckUnavailable(RuntimeError):
    """``genai-prices`` is not installed."""


@dataclass(frozen=True, slots=True)
class Disagreement:
    model: str
    entry: str
    tier: str
    dimension: str
    ours: Decimal
    theirs: Decimal
    their_model: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    compared_models: tuple[str, ...]
    unknown_to_them: tuple[str, ...]
    compared_prices: int
    disagreements: tuple[Disagreement, ...]


def _their_snapshot() -> Any:
    try:
        from genai_prices import data_snapshot
    except ImportError:
        raise CheckUnavailable(
            "genai-prices is not installed: pip install 'openai-meter[check]'"
        ) from None
    return data_snapshot.get_snapshot()


def _their_rate(prices: Any, dimension: str) -> Decimal | None:
    value = getattr(prices, THEIR_FIELDS[dimension], None)
    if value is None:
        return None
    base = getattr(value, "base", value)  # TieredPrices -> the price below the first tier
    return Decimal(str(base))


def compare(book: PriceBook, at: datetime) -> CheckResult:
    snapshot = _their_snapshot()
    day = at.date()
    compared: list[str] = []
    unknown: list[str] = []
    count = 0
    disagreements: list[Disagreement] = []
    for model in sorted({e.model for e in book.entries()}):
        entry = book.entry_at(model, day)
        if entry is None:
            continue
        try:
            _, their_model = snapshot.find_provider_model(model, None, "openai", None)
        except LookupError:
            unknown.append(model)
            continue
        compared.append(model)
        variants = [getattr(v, "when", None) for v in (their_model.price_variants or [])]
        for tier, context in TIER_CONTEXTS.items():
            if context is not None and context not in variants:
                continue
            ours, _ = tier_rates(entry, tier)
            if ours is None:
                continue
            theirs = their_model.get_prices(at, context)
            for dimension, rate in ours.tokens.items():
                their_rate = _their_rate(theirs, dimension)
                if their_rate is None:
                    continue
                count += 1
                if their_rate != rate:
                    disagreements.append(
                        Disagreement(
                            model, entry.key, tier, dimension, rate, their_rate, their_model.id
                        )
                    )
    return CheckResult(tuple(compared), tuple(unknown), count, tuple(disagreements))
