"""Exact money for the ledger: 10 decimal places, half-even, and SQLite's integer 1e-10 USD units.

Pure (no SQLAlchemy), so the SQLite writer process can encode rows without importing it; the column
type that uses these rules is :class:`storage.types.Money`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

MONEY_PLACES: Final = 10
MONEY_QUANTUM: Final = Decimal(1).scaleb(-MONEY_PLACES)
MONEY_SCALE: Final = 10**MONEY_PLACES
MONEY_PRECISION: Final = 20
_BIGINT_MAX: Final = 2**63 - 1
MONEY_MAX: Final = min(
    Decimal(10) ** (MONEY_PRECISION - MONEY_PLACES) - MONEY_QUANTUM,  # NUMERIC(20, 10)
    Decimal(_BIGINT_MAX).scaleb(-MONEY_PLACES),  # SQLite: a signed 64-bit count of 1e-10 USD
)
"""The largest absolute value one ``Money`` column holds on every backend (~922 million USD)."""


def quantize_money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def money_to_units(value: Decimal) -> int:
    """Exact Decimal USD -> integer count of 1e-10 USD."""
    return int(quantize_money(value).scaleb(MONEY_PLACES))


def units_to_money(units: int) -> Decimal:
    return quantize_money(Decimal(units).scaleb(-MONEY_PLACES))
