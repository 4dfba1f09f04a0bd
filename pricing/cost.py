"""Result types of the cost engine (pure data; the engine lives beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from pricing.usage import Usage


# Cost and CostComponent are built on every call: plain slotted classes (not frozen, ~3x cheaper to
# construct); treat them as immutable.
@dataclass(slots=True)
class CostComponent:
    """One priced line: e.g. ``output_tokens`` 200 x 0.60/1M = 0.00012."""

    dimension: str
    quantity: Decimal
    rate: Decimal
    per: Decimal
    amount: Decimal


@dataclass(slots=True)
class Cost:
    """The price of one call. ``total is None`` means unpriced (never silently $0)."""

    total: Decimal | None
    price_ref: str | None
    components: tuple[CostComponent, ...] = ()
    unpriced_reason: str | None = None

    @property
    def priced(self) -> bool:
        return self.total is not None


class Pricer(Protocol):
    """What the proxy needs from the pricing package: one pure function."""

    def price(self, usage: Usage, model: str | None, tier: str | None, at: datetime) -> Cost: ...
