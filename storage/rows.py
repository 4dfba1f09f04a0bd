"""Pure conversions of :class:`UsageRecord`: to a ledger row, to/from a spool JSON line.

Money and unit counts leave as decimal strings, never floats; datetimes as ISO 8601 with offset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from storage.record import UsageRecord

RECORD_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(UsageRecord))
_DATETIME_FIELDS: Final = frozenset({"started_at", "finished_at"})


def record_to_row(record: UsageRecord) -> dict[str, Any]:
    """The ``usage_records`` row for a record (column names are the field names)."""
    row = {name: getattr(record, name) for name in RECORD_FIELDS}
    row["tags"] = dict(record.tags)
    row["units"] = {key: str(count) for key, count in record.units.items()}
    return row


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a ledger record")


def record_to_json(record: UsageRecord) -> bytes:
    """One spool / journal line (without the newline).

    orjson encodes the slotted dataclass in C (datetimes as ISO 8601 with offset, Decimals as
    strings through the default): ~2x faster than building the row dict first, and this runs on
    the request path for every call (the journal).
    """
    return orjson.dumps(record, default=_encode_default)


def record_from_json(line: bytes | str) -> UsageRecord:
    data: dict[str, Any] = orjson.loads(line)
    known = {name: data[name] for name in RECORD_FIELDS if name in data}
    for name in _DATETIME_FIELDS:
        known[name] = datetime.fromisoformat(known[name])
    if known.get("cost_usd") is not None:
        known["cost_usd"] = Decimal(known["cost_usd"])
    known["units"] = _decimal_map(known.get("units") or {})
    known["tags"] = dict(known.get("tags") or {})
    return UsageRecord(**known)


def _decimal_map(values: Mapping[str, Any]) -> dict[str, Decimal]:
    return {str(key): Decimal(str(value)) for key, value in values.items()}


def row_to_public(row: Any) -> dict[str, Any]:
    """A fetched ``usage_records`` row as a dict with the ledger's column names.

    Money stays :class:`Decimal` (formatting is the caller's job); units come back as Decimals.
    """
    out = {name: row[name] for name in RECORD_FIELDS}
    out["tags"] = dict(out["tags"] or {})
    out["units"] = _decimal_map(out["units"] or {})
    return out
