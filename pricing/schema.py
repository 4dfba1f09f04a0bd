"""The shape of a catalog file (``pricing/catalog/*.yaml``), validated strictly.

Every block forbids unknown keys, and every price is an exact decimal written as a string
(``"0.075"``), never a YAML float: a bare number would pass through binary floating point on the
way in. A catalog file looks like::

    entries:
      - model: gpt-4o-mini
        snapshots: [gpt-4o-mini-2024-07-18]
        effective_from: 2024-07-18
        source: "seed 004: https://platform.openai.com/docs/models/gpt-4o-mini"
        checked: 2026-11-22
        token_unit: per_1m_tokens          # or per_1k_tokens (converted exactly at load)
        standard: {input: "0.15", cached_input: "0.075", output: "0.60"}
        batch:    {input: "0.075", cached_input: "0.075", output: "0.30", source: "seed 002"}
    tools:
      - unit: web_search_calls
        rate: "25.00"
        per: 1000
        models: [gpt-4o, gpt-4o-mini]
        ...

Units by key (all USD): token rates per ``token_unit``; ``per_image`` per image by quality and
size; ``per_minute`` per minute of audio (usage unit ``audio_seconds``); ``per_1m_characters``;
``fine_tuned.training_tokens`` per 1M training tokens (``token_unit`` applies);
``fine_tuned.training_hours`` per training hour.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

TOKEN_DIMENSIONS: Final[tuple[str, ...]] = (
    "input",
    "cached_input",
    "cache_write",
    "output",
    "audio_input",
    "cached_audio_input",
    "audio_output",
    "image_input",
    "cached_image_input",
    "image_output",
)
"""Token price dimensions, each USD per ``token_unit`` (per 1M tokens once loaded)."""

MAX_RATE_DECIMALS_PER_1M: Final = 4
"""A per-1M rate with at most 4 decimals gives a per-token rate with at most 10 decimals, so an
integer token count times it fits the ledger's NUMERIC(20,10) without rounding."""

_SIZE = re.compile(r"^\d+x\d+$")


def _exact_decimal(value: object) -> Decimal:
    """Accept a decimal string or an int; reject floats (inexact) and anything negative."""
    if isinstance(value, bool | float):
        raise ValueError(f"write prices as quoted strings, not {type(value).__name__} {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"not a decimal number: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if result < 0:
        raise ValueError(f"a price cannot be negative: {value!r}")
    return result


Rate = Annotated[Decimal, BeforeValidator(_exact_decimal)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenRates(_Strict):
    """USD per ``token_unit`` for each kind of token. Absent means "no such price"."""

    input: Rate | None = None
    cached_input: Rate | None = None
    cache_write: Rate | None = None
    output: Rate | None = None
    audio_input: Rate | None = None
    cached_audio_input: Rate | None = None
    audio_output: Rate | None = None
    image_input: Rate | None = None
    cached_image_input: Rate | None = None
    image_output: Rate | None = None
    source: str | None = None

    def token_items(self) -> dict[str, Decimal]:
        return {d: v for d in TOKEN_DIMENSIONS if (v := getattr(self, d)) is not None}


class TierRates(TokenRates):
    """A tier's rates: tokens plus, where a tier lists them, per-unit prices."""

    per_image: dict[str, dict[str, Rate]] | None = None
    per_minute: Rate | None = None
    per_1m_characters: Rate | None = None

    @field_validator("per_image")
    @classmethod
    def _sizes(
        cls, value: dict[str, dict[str, Decimal]] | None
    ) -> dict[str, dict[str, Decimal]] | None:
        if value is None:
            return None
        for quality, sizes in value.items():
            if quality != quality.lower() or not quality:
                raise ValueError(f"image quality must be lower case: {quality!r}")
            for size in sizes:
                if not _SIZE.match(size):
                    raise ValueError(f"image size must look like 1024x1024: {size!r}")
        return value


class LongContext(_Strict):
    """Above ``above_input_tokens`` input tokens the whole call is billed at these rates."""

    above_input_tokens: int = Field(gt=0)
    standard: TokenRates
    priority: TokenRates | None = None
    source: str | None = None


class FineTuned(TokenRates):
    """Inference rates of ``ft:<this model>:...`` and the training price of this base model."""

    training_tokens: Rate | None = None
    training_hours: Rate | None = None


class ImageDefaults(_Strict):
    """Used when a call's image quality or size is ``auto`` / unknown (DALL·E defaults)."""

    quality: str | None = None
    size: str | None = None


_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._:-]*$")


class Entry(_Strict):
    """One model's prices for one period, with where they came from."""

    model: str
    aliases: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()
    effective_from: date
    effective_until: date | None = None
    source: str = Field(min_length=1)
    checked: date
    token_unit: Literal["per_1m_tokens", "per_1k_tokens"] = "per_1m_tokens"
    standard: TierRates
    batch: TierRates | None = None
    flex: TierRates | None = None
    priority: TierRates | None = None
    scale: TierRates | None = None
    long_context: LongContext | None = None
    fine_tuned: FineTuned | None = None
    image_defaults: ImageDefaults | None = None
    notes: str | None = None

    @field_validator("model", "aliases", "snapshots")
    @classmethod
    def _names(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for name in (value,) if isinstance(value, str) else value:
            if not _MODEL_NAME.match(name):
                raise ValueError(f"model names are lower case without spaces: {name!r}")
        return value

    @property
    def key(self) -> str:
        """The entry's id, used in ``price_ref``: ``<model>@<effective_from>``."""
        return f"{self.model}@{self.effective_from.isoformat()}"


ToolUnit = Literal[
    "web_search_calls", "file_search_calls", "containers", "file_search_storage_gb_days"
]


class ToolPrice(_Strict):
    """A built-in tool fee: ``rate`` USD per ``per`` units, for the listed models (``"*"``: any)."""

    unit: ToolUnit
    rate: Rate
    per: int = Field(gt=0)
    models: tuple[str, ...] = Field(min_length=1)
    free_quantity: Rate | None = None
    effective_from: date
    effective_until: date | None = None
    source: str = Field(min_length=1)
    checked: date
    notes: str | None = None


class CatalogFile(_Strict):
    entries: tuple[Entry, ...] = ()
    tools: tuple[ToolPrice, ...] = ()
