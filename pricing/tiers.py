"""Service tiers: OpenAI's words (a response's ``service_tier``) -> the catalog's tier names.

One vocabulary for people: the catalog's (``standard``, ``batch``, ``flex``, ``priority``,
``scale``) -- what ``price_ref``, ``openai-meter prices`` and reports show. The ledger's
``service_tier`` column keeps what OpenAI said (``default``, ``auto``, ...), as recorded.
Light on purpose (no catalog, no pydantic): reports import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

TIER_ALIASES: Final[Mapping[str | None, str]] = MappingProxyType(
    {
        None: "standard",
        "": "standard",
        "default": "standard",
        "auto": "standard",
        "standard": "standard",
        "batch": "batch",
        "flex": "flex",
        "priority": "priority",
        "fast": "priority",  # the API reports "fast" requests as priority
        "scale": "scale",
    }
)
"""Response ``service_tier`` values (and the caller's ``batch``) -> catalog tier."""


def normalize_tier(tier: str | None) -> str | None:
    return TIER_ALIASES.get(tier.lower() if tier else tier)
