"""Upstream rate-limit headroom: response header parsing and the published usage-tier limits. Pure.

OpenAI answers every call with ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers
(reference notes §4.2: ``x-ratelimit-limit-requests``, ``x-ratelimit-limit-tokens``,
``x-ratelimit-remaining-requests``, ``x-ratelimit-remaining-tokens``, ``x-ratelimit-reset-requests``,
``x-ratelimit-reset-tokens``; resets look like ``12ms`` or ``6m0s``). The limits are per model, so
the gauges fed from them carry the (bounded) model label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

RATELIMIT_KINDS: Final[tuple[str, ...]] = ("requests", "tokens")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS: Final[dict[str, float]] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}


@lru_cache(maxsize=512)  # the same few reset strings repeat on every response
def parse_reset(value: str) -> float | None:
    """``"6m0s"`` -> 360.0, ``"12ms"`` -> 0.012, ``"1h2m3.5s"`` -> 3723.5, bare ``"2"`` -> 2.0.

    Anything else (empty, negative, garbage between parts) -> ``None``: a header we cannot read is
    ignored, never an error in the request path.
    """
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        return None
    return total


def _parse_count(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():  # rejects "", "-1", "1.5", "abc"
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """One kind (``requests`` or ``tokens``) as the upstream reported it; missing parts are None."""

    kind: str
    limit: int | None
    remaining: int | None
    reset_seconds: float | None


# (kind, limit header, remaining header, reset header), built once.
_HEADER_NAMES: Final[tuple[tuple[str, str, str, str], ...]] = tuple(
    (k, f"x-ratelimit-limit-{k}", f"x-ratelimit-remaining-{k}", f"x-ratelimit-reset-{k}")
    for k in RATELIMIT_KINDS
)


def parse_ratelimit_headers(headers: Mapping[str, str]) -> tuple[RateLimitState, ...]:
    """The kinds present in ``headers`` (a case-insensitive mapping, e.g. aiohttp's CIMultiDict).

    A kind is returned when at least one of its three headers parsed; others are left out.
    """
    states: list[RateLimitState] = []
    for kind, limit_name, remaining_name, reset_name in _HEADER_NAMES:
        limit = _parse_count(headers.get(limit_name))
        remaining = _parse_count(headers.get(remaining_name))
        reset_raw = headers.get(reset_name)
        reset = parse_reset(reset_raw) if reset_raw is not None else None
        if limit is None and remaining is None and reset is None:
            continue
        states.append(RateLimitState(kind, limit, remaining, reset))
    return tuple(states)


# --- Published usage-tier limits -------------------------------------------------------------------
#
# Transcribed from OpenAI's model page for gpt-4o-mini, "Rate limits" table
# (https://platform.openai.com/docs/models/gpt-4o-mini, copy from 2026; seed 004 of the product spec).
# The third-party article "GPT-4o Mini Pricing: The Cheapest Way to Use OpenAI (April 2026)" (seed 002)
# gives the same Tier 1-5 numbers but a different Free row (500 RPM, 200K TPM, 500 RPD); the official
# page wins (DESIGN: prefer the official pages), so Free is 3 RPM / 200 RPD / 40,000 TPM.
# ``None`` = no published limit ("-" in the table). Kinds: rpm, rpd, tpm, batch_queue_tokens.
# Only gpt-4o-mini's table was available; other models simply have no tier gauge.

USAGE_TIERS: Final[tuple[str, ...]] = ("free", "tier1", "tier2", "tier3", "tier4", "tier5")
TIER_LIMIT_KINDS: Final[tuple[str, ...]] = ("rpm", "rpd", "tpm", "batch_queue_tokens")

USAGE_TIER_LIMITS: Final[dict[str, dict[str, dict[str, int | None]]]] = {
    "gpt-4o-mini": {
        "free": {"rpm": 3, "rpd": 200, "tpm": 40_000, "batch_queue_tokens": None},
        "tier1": {"rpm": 500, "rpd": 10_000, "tpm": 200_000, "batch_queue_tokens": 2_000_000},
        "tier2": {"rpm": 5_000, "rpd": None, "tpm": 2_000_000, "batch_queue_tokens": 20_000_000},
        "tier3": {"rpm": 5_000, "rpd": None, "tpm": 4_000_000, "batch_queue_tokens": 40_000_000},
        "tier4": {
            "rpm": 10_000,
            "rpd": None,
            "tpm": 10_000_000,
            "batch_queue_tokens": 1_000_000_000,
        },
        "tier5": {
            "rpm": 30_000,
            "rpd": None,
            "tpm": 150_000_000,
            "batch_queue_tokens": 15_000_000_000,
        },
    },
}


def tier_limits(tier: str) -> dict[tuple[str, str], int]:
    """``{(model, kind): limit}`` for one usage tier (published limits only)."""
    if tier not in USAGE_TIERS:
        raise ValueError(f"unknown usage tier {tier!r}; expected one of {', '.join(USAGE_TIERS)}")
    out: dict[tuple[str, str], int] = {}
    for model, tiers in USAGE_TIER_LIMITS.items():
        for kind, limit in tiers[tier].items():
            if limit is not None:
                out[(model, kind)] = limit
    return out
