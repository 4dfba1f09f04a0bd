"""Column types that keep money exact and time in UTC on both SQLite and PostgreSQL.

Money (``Money``): PostgreSQL stores ``NUMERIC(20, 10)``; SQLite has no exact decimal (its NUMERIC
affinity turns values into REAL), so there the same column is an ``INTEGER`` count of 1e-10 USD
("ten-nano-cent" units, :data:`MONEY_SCALE`). ``SUM()`` stays exact on both: integer arithmetic on
SQLite, decimal arithmetic on PostgreSQL, and ``func.sum(col)`` keeps the column type so results come
back as :class:`~decimal.Decimal` either way. Values are quantized to 10 decimal places (half-even),
exactly what ``NUMERIC(20, 10)`` does. Range: ±922,337,203 USD per value or sum on SQLite.

Time (``UtcDateTime``): stored as UTC (SQLite keeps a naive ISO string, which sorts correctly);
always read back as an aware UTC ``datetime``. Naive inputs are rejected: a ledger guessing at a
timezone would misplace spend across days.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

# The money rules live in storage.money (no SQLAlchemy: the SQLite writer process imports them).
from storage.money import (
    MONEY_MAX,
    MONEY_PLACES,
    MONEY_PRECISION,
    MONEY_QUANTUM,
    MONEY_SCALE,
    money_to_units,
    quantize_money,
    units_to_money,
)

__all__ = [
    "MONEY_MAX",
    "MONEY_PLACES",
    "MONEY_PRECISION",
    "MONEY_QUANTUM",
    "MONEY_SCALE",
    "Money",
    "UtcDateTime",
    "money_to_units",
    "quantize_money",
    "units_to_money",
]


class Money(TypeDecorator[Decimal]):
    """Exact USD: NUMERIC(20,10) on PostgreSQL, INTEGER 1e-10 USD units on SQLite."""

    impl = Numeric(MONEY_PRECISION, MONEY_PLACES, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_PLACES, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        if dialect.name == "sqlite":
            return money_to_units(value)
        return quantize_money(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            if isinstance(value, float):  # never expected: would mean a REAL crept in
                raise TypeError("money column returned a float on SQLite")
            return units_to_money(int(value))
        return quantize_money(Decimal(value))


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware (UTC) datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
