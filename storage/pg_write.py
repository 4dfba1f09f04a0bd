"""PostgreSQL: a whole batch in one statement and one parameter, rollup included.

The batch travels as one JSON array (``orjson`` encodes the records' dataclass fields in C) and the
server expands it with ``json_populate_recordset(NULL::usage_records, $1::json)``. That replaced
``INSERT … SELECT FROM unnest($1::varchar[], … $40)`` plus a separate rollup ``executemany``:
asyncpg's per-element encoding of 40 typed arrays and the second round trip cost more than the
server's JSON parse (``bench/ledger_bench.py``, docs/performance.md "Ledger").

:data:`INSERT_WITH_ROLLUP` is one data-modifying CTE: the raw insert (``ON CONFLICT (id) DO
NOTHING``) returns exactly the rows it inserted, and only those are summed into ``usage_daily`` —
same key (UTC day, team, model or ``''``, service tier or ``''``, endpoint) and sums as
:func:`storage.rollup.rollup_deltas` and revision 0002's backfill, money summed as stored in
``NUMERIC(20,10)``. Rollup rows are upserted in key order, compared by code point (``COLLATE "C"``,
as Python sorts), so concurrent writers lock them in the same order (no deadlocks).

Encoding keeps values exact: money is quantized half-even to 10 places in Python first (the server
would round half away from zero) and sent as a decimal string; datetimes as ISO 8601 with their
offset (naive ones are refused); JSON columns keep the text ``storage.bulk`` wrote before
(``{"key":"value"}``, unit counts as decimal strings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import orjson

from storage.record import UsageRecord
from storage.schema import ROLLUP_KEY, ROLLUP_SUMS, TOKEN_COLUMNS, usage_records
from storage.types import MONEY_PLACES, quantize_money

COLUMNS: Final[tuple[str, ...]] = tuple(
    str(c.name) for c in usage_records.columns
)  # plain str keys for orjson


def _quoted(name: str) -> str:
    return f'"{name}"'


_COLS: Final = ", ".join(map(_quoted, COLUMNS))
_INSERT: Final = (
    f"INSERT INTO usage_records ({_COLS}) "
    f"SELECT {_COLS} FROM json_populate_recordset(NULL::usage_records, $1::json) "
    "ON CONFLICT (id) DO NOTHING"
)

INSERT_RETURNING_IDS: Final = f"{_INSERT} RETURNING id"
"""Raw rows only; returns the ids inserted (in batch order)."""


def _insert_with_rollup() -> str:
    returned = ", ".join(
        ("started_at", "team", "model", "service_tier", "endpoint", "usage_source", "cost_usd")
    )
    returned += ", " + ", ".join(TOKEN_COLUMNS)
    key_exprs = {
        "day": "CAST(started_at AT TIME ZONE 'UTC' AS date)",
        "team": "team",
        "model": "COALESCE(model, '')",
        "service_tier": "COALESCE(service_tier, '')",
        "endpoint": "endpoint",
    }
    sums = {
        "requests": "COUNT(*)",
        **{name: f"SUM({name})" for name in TOKEN_COLUMNS},
        "cost_usd": "COALESCE(SUM(cost_usd), 0)",
        "unpriced_requests": "COUNT(*) FILTER (WHERE cost_usd IS NULL)",
        "estimated_requests": "COUNT(*) FILTER (WHERE usage_source = 'estimated')",
    }
    assert tuple(key_exprs) == ROLLUP_KEY and tuple(sums) == ROLLUP_SUMS
    keys = [key_exprs[name] for name in ROLLUP_KEY]
    order = [keys[0], *(f'{expr} COLLATE "C"' for expr in keys[1:])]
    targets = ", ".join(map(_quoted, (*ROLLUP_KEY, *ROLLUP_SUMS)))
    updates = ", ".join(f"{n} = usage_daily.{n} + EXCLUDED.{n}" for n in ROLLUP_SUMS)
    return (
        f"WITH inserted AS ({_INSERT} RETURNING {returned}), "
        f"rolled AS (INSERT INTO usage_daily ({targets}) "
        f"SELECT {', '.join(keys)}, {', '.join(sums.values())} FROM inserted "
        f"GROUP BY {', '.join(keys)} ORDER BY {', '.join(order)} "
        f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {updates}) "
        "SELECT COUNT(*) FROM inserted"
    )


INSERT_WITH_ROLLUP: Final = _insert_with_rollup()
"""Raw rows and their rollup; returns how many rows were inserted."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):  # unit counts (money is quantized before encoding)
        return str(value)
    if isinstance(value, Mapping):  # tags/units given as a non-dict mapping
        return dict(value)
    raise TypeError(f"cannot store {type(value).__name__} in the ledger")


def _exact(record: UsageRecord) -> dict[str, Any] | UsageRecord:
    """The record as orjson should encode it: itself unless a field needs adjusting."""
    if record.started_at.tzinfo is None or record.finished_at.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use an aware (UTC) datetime")
    cost = record.cost_usd
    tags = record.tags
    if (cost is None or _fits(cost)) and all(type(v) is str for v in tags.values()):
        return record
    row = {name: getattr(record, name) for name in COLUMNS}
    if cost is not None:
        row["cost_usd"] = str(quantize_money(cost))
    row["tags"] = {key: str(value) for key, value in tags.items()}
    return row


def _fits(cost: Decimal) -> bool:
    """True when ``str(cost)`` is already the value ``NUMERIC(20,10)`` stores (no rounding)."""
    exponent = cost.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -MONEY_PLACES


def batch_json(records: Sequence[UsageRecord]) -> str:
    """The batch as the JSON array ``json_populate_recordset`` reads (fields = column names)."""
    return orjson.dumps([_exact(r) for r in records], default=_default).decode()
