"""PostgreSQL: a whole batch in one statement and one parameter, rollup included.

The batch travels as one JSON array of row arrays (``orjson`` encodes the tuples in C) and the
server expands it with ``jsonb_array_elements($1::jsonb)``, casting ``e->>i`` to each column's type.
That replaced ``INSERT … SELECT FROM unnest($1::varchar[], … $40)`` plus a separate rollup
``executemany``: asyncpg's per-element encoding of 40 typed arrays and the second round trip cost
more than the server's JSON parse. Arrays rather than objects: a third of the bytes and half the
server time of ``json_populate_recordset`` (``bench/ledger_bench.py``, docs/performance.md).

:data:`INSERT_WITH_ROLLUP` is one data-modifying CTE: the raw insert (``ON CONFLICT (id) DO
NOTHING``) returns exactly the rows it inserted, and only those are summed into ``usage_daily`` —
same key (UTC day, team, model or ``''``, service tier or ``''``, endpoint) and sums as
:func:`storage.rollup.rollup_deltas` and revision 0002's backfill, money summed as stored in
``NUMERIC(20,10)``. Rollup rows are upserted in key order, compared by code point (``COLLATE "C"``,
as Python sorts), so concurrent writers lock them in the same order (no deadlocks).

Values stay exact: money is quantized half-even to 10 places in Python (the server would round
half away from zero) and sent as a decimal string; datetimes as ISO 8601 with their offset (naive
ones are refused); ``tags``/``units`` as the JSON text the ledger always stored (``{"k":"v"}``,
unit counts as decimal strings), kept verbatim; text columns are not cast, so an over-long value
is refused as before rather than truncated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any, Final

import orjson
from sqlalchemy import Column, String
from sqlalchemy.dialects import postgresql

from storage.record import UsageRecord
from storage.schema import ROLLUP_KEY, ROLLUP_SUMS, TOKEN_COLUMNS, usage_records
from storage.types import quantize_money

COLUMNS: Final[tuple[str, ...]] = tuple(str(c.name) for c in usage_records.columns)
_CONVERTED: Final = ("tags", "units", "cost_usd")
_PLAIN: Final = tuple(c for c in COLUMNS if c not in _CONVERTED)
SENT: Final[tuple[str, ...]] = (*_PLAIN, *_CONVERTED)
"""Column order of each row array in the JSON batch."""
_plain_values: Final = attrgetter(*_PLAIN)


def _quoted(name: str) -> str:
    return f'"{name}"'


_DIALECT: Final = postgresql.dialect()  # type: ignore[no-untyped-call]


def _value(index: int, column: Column[Any]) -> str:
    expr = f"(e->>{index})"
    if isinstance(column.type, String):  # assignment checks the length; a cast would truncate
        return expr
    return f"{expr}::{column.type.compile(dialect=_DIALECT)}"


_INSERT: Final = (
    f"INSERT INTO usage_records ({', '.join(map(_quoted, SENT))}) "
    f"SELECT {', '.join(_value(i, usage_records.c[n]) for i, n in enumerate(SENT))} "
    "FROM jsonb_array_elements($1::jsonb) AS e "
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


def _json(value: Mapping[str, Any]) -> str:
    if not value:
        return "{}"
    return orjson.dumps({key: str(item) for key, item in value.items()}).decode()


def _row(record: UsageRecord) -> tuple[Any, ...]:
    if record.started_at.tzinfo is None or record.finished_at.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use an aware (UTC) datetime")
    cost = record.cost_usd
    money = None if cost is None else str(quantize_money(cost))
    return (*_plain_values(record), _json(record.tags), _json(record.units), money)


def batch_json(records: Sequence[UsageRecord]) -> str:
    """The batch as the JSON array of rows (columns in :data:`SENT` order) the statements read."""
    return orjson.dumps([_row(r) for r in records]).decode()
