"""The normalized usage vocabulary shared by extractors, the ledger and the cost engine.

Token fields follow OpenAI's own totals:

* ``input_tokens`` *includes* cached, cache-write, audio and image input tokens;
* ``output_tokens`` *includes* reasoning, audio and image output tokens;
* every other token field is a subset of one of those two totals.

``units`` carries what is not billed per token, keyed by a unit name with an exact ``Decimal`` count:

==============================  ======================================================
key                             meaning
==============================  ======================================================
``images``                      images produced when quality/size are unknown
``image:<quality>:<size>``      images of one quality and size, e.g. ``image:hd:1024x1792``
``audio_seconds``               seconds of audio transcribed / translated
``characters``                  characters of text synthesized (tts-1, tts-1-hd)
``web_search_calls``            built-in web search tool calls
``file_search_calls``           built-in file search tool calls
``containers``                  distinct code-interpreter containers
``training_tokens``             fine-tuning training tokens
``training_hours``              reinforcement fine-tuning training hours
``file_search_storage_gb_days`` vector-store storage (GB x days) beyond the free GB
``cached_audio_input_tokens``   the audio part of ``cached_input_tokens`` (realtime)
``cached_image_input_tokens``   the image part of ``cached_input_tokens`` (image models)
==============================  ======================================================

The two ``cached_*_input_tokens`` units only split token counts that are already in the token
fields (they are never billed by themselves). Any other unit key with a non-zero count that the
model has no price for makes the call unpriced (never a silent $0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Final

TOKEN_FIELDS: Final[tuple[str, ...]] = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "image_input_tokens",
    "image_output_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
)

# No single API call consumes anywhere near this many tokens (the largest context windows are ~1e6):
# a reported count above it is a broken or hostile upstream, never a bill (the usage path estimates
# instead; the ledger's bounds refuse it).
MAX_TOKENS_PER_CALL: Final = 10**12

_EMPTY_UNITS: Final[Mapping[str, Decimal]] = MappingProxyType({})


# Built several times per call: a plain slotted class, not frozen (a frozen dataclass sets each of
# its 12 fields through object.__setattr__: ~6x slower to construct). Treat it as immutable: derive
# new values with ``replace``, ``+`` or ``with_units``, never assign to a field.
@dataclass(slots=True)
class Usage:
    """What one call consumed. All counts are non-negative; missing details are 0."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    image_input_tokens: int = 0
    image_output_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    units: Mapping[str, Decimal] = field(default_factory=lambda: _EMPTY_UNITS)

    def __post_init__(self) -> None:
        # One expression for the common case (all counts valid); the loop names the bad field.
        if (
            self.input_tokens < 0
            or self.cached_input_tokens < 0
            or self.cache_write_tokens < 0
            or self.output_tokens < 0
            or self.reasoning_tokens < 0
            or self.audio_input_tokens < 0
            or self.audio_output_tokens < 0
            or self.image_input_tokens < 0
            or self.image_output_tokens < 0
            or self.accepted_prediction_tokens < 0
            or self.rejected_prediction_tokens < 0
        ):
            for name in TOKEN_FIELDS:
                value = getattr(self, name)
                if value < 0:
                    raise ValueError(f"{name} must be >= 0, got {value}")
        if self.units is _EMPTY_UNITS:
            return
        for key, count in self.units.items():
            if count < 0:
                raise ValueError(f"unit {key!r} must be >= 0, got {count}")
        if not isinstance(self.units, MappingProxyType):
            self.units = MappingProxyType(dict(self.units))

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        merged = dict(self.units)
        for key, count in other.units.items():
            merged[key] = merged.get(key, Decimal(0)) + count
        values = {name: getattr(self, name) + getattr(other, name) for name in TOKEN_FIELDS}
        return Usage(**values, units=merged)

    def with_units(self, **units: Decimal) -> Usage:
        merged = dict(self.units)
        merged.update(units)
        return replace(self, units=merged)

    @property
    def is_empty(self) -> bool:
        return not self.units and all(
            getattr(self, f.name) == 0 for f in fields(self) if f.name != "units"
        )


USAGE_SOURCES: Final[tuple[str, ...]] = ("reported", "estimated", "none")
