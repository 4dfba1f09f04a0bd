"""A ledger record as the SQLite driver's row: the one encoding both SQLite write paths use.

Values as :mod:`storage.types` stores them on SQLite (SQLAlchemy's DATETIME text in UTC, money as an
integer count of 1e-10 USD, JSON text, 0/1 booleans), so rows written by the in-process path
(:mod:`storage.bulk`) and by the writer process (:mod:`storage.sqlite_batch`) read back the same.
Pure: no SQLAlchemy (the writer process stays small); ``tests/storage`` checks ``COLUMNS`` against
``storage.schema.usage_records``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any, Final

import orjson

from storage.money import money_to_units
from storage.record import UsageRecord
from storage.rows import record_from_json

COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(UsageRecord))
_ALL: Final = attrgetter(*COLUMNS)
_I_START: Final = COLUMNS.index("started_at")
_I_FINISH: Final = COLUMNS.index("finished_at")
_I_TAGS: Final = COLUMNS.index("tags")
_I_UNITS: Final = COLUMNS.index("units")
_I_COST: Final = COLUMNS.index("cost_usd")
_I_STREAM: Final = COLUMNS.index("stream")


def _quoted(name: str) -> str:
    return f'"{name}"'


SQLITE_INSERT: Final = (
    f"INSERT OR IGNORE INTO usage_records ({', '.join(map(_quoted, COLUMNS))}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def json_text(value: Any) -> str:
    if not value:
        return "{}"
    return orjson.dumps({k: str(v) for k, v in value.items()}).decode()


def sqlite_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use an aware (UTC) datetime")
    if value.utcoffset():
        value = value.astimezone(UTC)
    # SQLAlchemy's SQLite DATETIME format: sorts as text, read back by storage.types.UtcDateTime.
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_row(record: UsageRecord) -> tuple[Any, ...]:
    row = list(_ALL(record))
    row[_I_START] = sqlite_time(row[_I_START])
    row[_I_FINISH] = sqlite_time(row[_I_FINISH])
    row[_I_TAGS] = json_text(row[_I_TAGS])
    row[_I_UNITS] = json_text(row[_I_UNITS])
    cost = row[_I_COST]
    row[_I_COST] = None if cost is None else money_to_units(cost)
    row[_I_STREAM] = 1 if row[_I_STREAM] else 0
    return tuple(row)


def _utc_text(value: Any) -> str | None:
    """The journal's UTC time (orjson: ``…T12:00:00[.ffffff]+00:00``) as SQLite's text; None for
    any other form (an offset, a naive time), which takes the full path."""
    if value.__class__ is not str or not value.endswith("+00:00"):
        return None
    if len(value) == 32 and value[19] == ".":
        return f"{value[:10]} {value[11:26]}"
    if len(value) == 25:  # orjson leaves out microseconds that are zero
        return f"{value[:10]} {value[11:19]}.000000"
    return None


class _FullPath(Exception):
    pass


def sqlite_row_from_json(line: bytes) -> tuple[Any, ...]:
    """:func:`sqlite_row` of the record a journal line holds, without building the record.

    The writer process's path (issue 16): decoding into a ``UsageRecord`` (datetimes, Decimals, a
    40-field dataclass) cost ~12 µs of its ~33 µs per record. Lines in the journal's own form go
    straight to the row; anything else (an offset, a missing field, a value of another type)
    goes through :func:`storage.rows.record_from_json` and :func:`sqlite_row`, so the result is
    the same either way (property-tested in ``tests/storage/test_writer_process.py``).
    """
    data = orjson.loads(line)
    try:
        if data.__class__ is not dict:
            raise _FullPath
        row = [data[name] for name in COLUMNS]
        start, finish = _utc_text(row[_I_START]), _utc_text(row[_I_FINISH])
        tags, units, cost = row[_I_TAGS], row[_I_UNITS], row[_I_COST]
        if start is None or finish is None or tags.__class__ is not dict:
            raise _FullPath
        if units.__class__ is not dict or not (cost is None or cost.__class__ is str):
            raise _FullPath
        row[_I_START] = start
        row[_I_FINISH] = finish
        row[_I_TAGS] = json_text(tags)
        row[_I_UNITS] = json_text(units)
        row[_I_COST] = None if cost is None else money_to_units(Decimal(cost))
        row[_I_STREAM] = 1 if row[_I_STREAM] else 0
        return tuple(row)
    except (_FullPath, KeyError, InvalidOperation):
        return sqlite_row(record_from_json(line))
