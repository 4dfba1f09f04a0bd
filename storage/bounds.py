"""Make any record storable: one rule per ledger column, read from the schema, in one place.

:func:`bound_record` is the ledger's last line of defence. The meter builds records from client
input and upstream answers; whatever a record holds, it leaves here either *bounded* (a record every
backend accepts) or *refused* (:class:`Refused`, with the reason, for the dead-letter store) -- never
an exception, never a silently wrong row. The rules, by column type in :data:`storage.schema`:

* text (``String(n)``, ``Text``): anything that is not ``str`` becomes its ``str()``; invalid UTF-8
  (lone surrogates, e.g. ``%ff`` in a path or a non-UTF-8 header byte decoded by ``surrogateescape``)
  is decoded with U+FFFD replacement; NUL (PostgreSQL refuses it in text and jsonb) becomes U+FFFD;
  longer than the column's width -> cut to ``n - 1`` characters plus ``…`` (the cut stays visible).
  ``None`` in a NOT NULL text column becomes ``''``.
* ``tags`` / ``units`` (JSON): at most :data:`~storage.schema.JSON_MAX_ENTRIES` entries, keys and
  values cleaned and cut like text (:data:`~storage.schema.JSON_KEY_WIDTH`,
  :data:`~storage.schema.JSON_VALUE_WIDTH`); a unit count that is not a finite number is dropped and
  the call becomes unpriced (``unpriced_reason = invalid_units: …``).
* token counts (``BigInteger``): must be a non-negative ``int`` no larger than
  :data:`pricing.usage.MAX_TOKENS_PER_CALL`. The usage path turns bad upstream numbers into an
  estimate (``estimate_reason = invalid_usage``) before a record exists; a record that still carries
  one is refused here (the token count is the bill: zeroing it would be a silently wrong row).
* ``cost_usd`` (``Money``): a finite Decimal within :data:`storage.types.MONEY_MAX`, else the call is
  unpriced (``cost_usd = NULL``, ``unpriced_reason = cost_out_of_range: …``).
* ``status_code`` (``Integer``): an ``int`` in the column's 32-bit range, else ``NULL``.
* ``latency_ms`` / ``ttft_ms`` (``Float``): a finite number, else ``NULL``.
* ``stream`` (``Boolean``): ``True`` only when it is ``True``.
* ``started_at`` / ``finished_at``: aware datetimes, else refused (the ledger never guesses a
  timezone). ``id``: a non-empty clean string within its width, else refused (it is the record's
  identity: replay idempotence rests on it).

The fast path (every value already fine) builds nothing and costs ~2 µs (bench/ledger_bench.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any, Final

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String

from pricing.usage import MAX_TOKENS_PER_CALL
from storage.record import UsageRecord
from storage.schema import (
    JSON_KEY_WIDTH,
    JSON_MAX_ENTRIES,
    JSON_VALUE_WIDTH,
    TOKEN_COLUMNS,
    usage_records,
)
from storage.types import MONEY_MAX, Money, UtcDateTime, quantize_money

ELLIPSIS: Final = "…"
_INT32_MAX: Final = 2**31 - 1
_REASON_WIDTH: Final = 200


def _width(name: str) -> int | None:
    column_type = usage_records.c[name].type
    return column_type.length if isinstance(column_type, String) else None


_NO_WIDTH: Final = 2**62  # Text columns: no width (compared like one, never reached)
# (column, width, nullable) for every text column, from the schema.
_TEXT: Final[tuple[tuple[str, int, bool], ...]] = tuple(
    (str(c.name), _width(str(c.name)) or _NO_WIDTH, bool(c.nullable))
    for c in usage_records.columns
    if isinstance(c.type, String) and c.name != "id"
)
_text_values: Final = attrgetter(*(name for name, _, _ in _TEXT))
_ID_WIDTH: Final = _width("id") or 64
_TOKENS: Final[tuple[str, ...]] = tuple(
    str(c.name) for c in usage_records.columns if isinstance(c.type, BigInteger)
)
_FLOATS: Final[tuple[str, ...]] = tuple(
    str(c.name) for c in usage_records.columns if isinstance(c.type, Float)
)
_TIMES: Final[tuple[str, ...]] = tuple(
    str(c.name) for c in usage_records.columns if isinstance(c.type, UtcDateTime)
)
assert _TOKENS == TOKEN_COLUMNS
_token_values: Final = attrgetter(*_TOKENS)
assert isinstance(usage_records.c.status_code.type, Integer)
assert isinstance(usage_records.c.stream.type, Boolean)
assert isinstance(usage_records.c.cost_usd.type, Money)
assert all(isinstance(usage_records.c[n].type, JSON) for n in ("tags", "units"))
_UNPRICED_WIDTH: Final = _width("unpriced_reason") or 255


@dataclass(frozen=True, slots=True)
class Refused:
    """A record the ledger cannot store as it is: goes to the dead-letter store with ``reason``."""

    record: UsageRecord
    reason: str


def clean_text(value: str) -> str:
    """``value`` as valid UTF-8 without NUL (invalid sequences and NUL become U+FFFD)."""
    if value.isascii():
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:  # lone surrogates from surrogateescape: the original bytes, decoded with replacement
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # other lone surrogates
            value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def bound_text(value: object, width: int | None) -> str:
    """Any value as clean text of at most ``width`` characters (a cut ends with ``…``)."""
    text = clean_text(value if isinstance(value, str) else _as_text(value))
    if width is not None and len(text) > width:
        text = text[: width - 1] + ELLIPSIS
    return text


def _as_text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _short(value: object) -> str:
    text = bound_text(value if isinstance(value, str) else _repr(value), 40)
    return text


def _repr(value: object) -> str:
    try:
        return repr(value)[:200]
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _text_ok(value: object, width: int | None, nullable: bool) -> bool:
    if value is None:
        return nullable
    return (
        value.__class__ is str
        and (width is None or len(value) <= width)
        and value.isascii()
        and "\x00" not in value
    )


def _map_ok(values: object, value_width: int | None) -> bool:
    """A dict of short clean ASCII keys and (when ``value_width``) values: nothing to do."""
    if values.__class__ is not dict or len(values) > JSON_MAX_ENTRIES:
        return False
    for key, value in values.items():
        if not _text_ok(key, JSON_KEY_WIDTH, False):
            return False
        if value_width is None:
            if value.__class__ is not Decimal or not value.is_finite():
                return False
        elif not _text_ok(value, value_width, False):
            return False
    return True


def bound_record(record: UsageRecord) -> UsageRecord | Refused:
    """The record, bounded to the schema, or :class:`Refused` with why. Never raises."""
    try:
        return _bound(record)
    except Exception as exc:  # a value no rule foresaw: dead-letter it, never stop the writer
        return Refused(record, bound_text(f"unstorable record: {exc!r}", _REASON_WIDTH))


def _bound(record: UsageRecord) -> UsageRecord | Refused:
    changes: dict[str, Any] = {}
    problems: list[str] = []
    unpriced: list[str] = []

    rid = record.id
    if not (
        rid.__class__ is str
        and 0 < len(rid) <= _ID_WIDTH
        and ((rid.isascii() and "\x00" not in rid) or clean_text(rid) == rid)
    ):
        problems.append(f"invalid id {_short(rid)}")
    for name in _TIMES:
        moment = getattr(record, name)
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            problems.append(f"{name} is not an aware datetime: {_short(moment)}")
    for (name, width, nullable), value in zip(_TEXT, _text_values(record), strict=True):
        if value.__class__ is str:
            if len(value) <= width and value.isascii() and "\x00" not in value:
                continue  # the usual case, inlined (this loop runs for every call)
        elif value is None and nullable:
            continue
        if value is None:
            changes[name] = ""
        else:
            bounded = bound_text(value, width if width < _NO_WIDTH else None)
            if bounded != value:
                changes[name] = bounded
    for name, tokens in zip(_TOKENS, _token_values(record), strict=True):
        if tokens.__class__ is not int or not 0 <= tokens <= MAX_TOKENS_PER_CALL:
            problems.append(
                f"invalid token count {name}={_short(tokens)} (0..{MAX_TOKENS_PER_CALL})"
            )

    status = record.status_code
    if status is not None and not (status.__class__ is int and 0 <= status <= _INT32_MAX):
        changes["status_code"] = None
    for name in _FLOATS:
        value = getattr(record, name)
        if value is not None and not (value.__class__ in (float, int) and math.isfinite(value)):
            changes[name] = None
    if record.stream is not True and record.stream is not False:
        changes["stream"] = record.stream is True

    tags = record.tags
    if tags and not _map_ok(tags, JSON_VALUE_WIDTH):
        bounded_tags = _bound_map(tags, lambda v: bound_text(v, JSON_VALUE_WIDTH))
        if bounded_tags != tags or not isinstance(tags, dict):
            changes["tags"] = bounded_tags
    elif not tags and not isinstance(tags, dict):
        changes["tags"] = {}
    units = record.units
    if units and not _map_ok(units, None):
        bounded_units = _bound_map(units, _unit_count)
        invalid = [k for k, v in bounded_units.items() if v is None]
        clean_units = {k: v for k, v in bounded_units.items() if v is not None}
        if invalid:
            unpriced.append("invalid_units: " + ",".join(invalid))
        if invalid or clean_units != units or not isinstance(units, dict):
            changes["units"] = clean_units
    elif not units and not isinstance(units, dict):
        changes["units"] = {}

    cost = record.cost_usd
    if cost is not None and not (
        cost.__class__ is Decimal and cost.is_finite() and -MONEY_MAX <= cost <= MONEY_MAX
    ):
        reason = _cost_problem(cost)
        if reason is not None:
            unpriced.append(reason)
    if unpriced:
        changes["cost_usd"] = None
        changes["unpriced_reason"] = bound_text("; ".join(unpriced), _UNPRICED_WIDTH)

    bounded_record = dataclasses.replace(record, **changes) if changes else record
    if problems:
        return Refused(bounded_record, bound_text("; ".join(problems), _REASON_WIDTH))
    return bounded_record


def _bound_map(values: Any, value_rule: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(values, Mapping):
        return out
    for key, value in values.items():
        if len(out) >= JSON_MAX_ENTRIES:
            break
        out[bound_text(key, JSON_KEY_WIDTH)] = value_rule(value)
    return out


def _unit_count(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, Decimal):
            count = value
        elif isinstance(value, int | float | str):
            count = Decimal(str(value))
        else:
            return None
    except (InvalidOperation, ValueError):
        return None
    if not count.is_finite() or len(str(count)) > JSON_VALUE_WIDTH:
        return None
    return count


def _cost_problem(cost: object) -> str | None:
    if not isinstance(cost, Decimal):
        return f"invalid_cost: {_short(cost)}"
    if not cost.is_finite():
        return f"cost_out_of_range: {cost}"
    try:
        if abs(quantize_money(cost)) > MONEY_MAX:
            return f"cost_out_of_range: {_short(cost)} USD"
    except InvalidOperation:  # quantize beyond the context's precision: astronomically large
        return f"cost_out_of_range: {_short(cost)} USD"
    return None  # a Decimal subclass, or within half a quantum of the bound: stored as is


# ---------------------------------------------------------------- the dead-letter row


def safe_row(record: UsageRecord) -> dict[str, Any]:
    """The record as a JSON-safe dict in the spool's line format; unencodable values as text."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(UsageRecord):
        out[field.name] = _safe(getattr(record, field.name, None))
    return out


def _safe(value: object) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return bound_text(value, 64 * 1024)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {bound_text(k, JSON_KEY_WIDTH): _safe(v) for k, v in list(value.items())[:256]}
    return bound_text(_repr(value), 1024)


def row_json(record: UsageRecord) -> str:
    """:func:`safe_row` as ASCII JSON text (always storable in a ``Text`` column)."""
    return json.dumps(safe_row(record), ensure_ascii=True, separators=(",", ":"))
