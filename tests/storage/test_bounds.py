"""The record normaliser: one rule per column from the schema; bounded or refused, never raises."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.usage import MAX_TOKENS_PER_CALL
from storage.bounds import ELLIPSIS, Refused, bound_record, bound_text, clean_text, row_json
from storage.record import UsageRecord
from storage.rows import record_from_json, record_to_json
from storage.schema import JSON_KEY_WIDTH, JSON_MAX_ENTRIES, TOKEN_COLUMNS, usage_records
from storage.types import MONEY_MAX
from tests.support.ledger_records import BASE_TIME, make_record


def _bounded(record: UsageRecord) -> UsageRecord:
    result = bound_record(record)
    assert isinstance(result, UsageRecord), result
    return result


def test_a_normal_record_passes_untouched_and_is_the_same_object() -> None:
    record = make_record(1, user="alice", project="proj_x", tags={"a": "b"})
    assert bound_record(record) is record


@pytest.mark.parametrize(
    ("column", "width"),
    [
        (str(c.name), c.type.length)
        for c in usage_records.columns
        if getattr(c.type, "length", None) and c.name != "id"
    ],
)
def test_every_text_column_is_cut_to_its_schema_width_with_a_visible_mark(
    column: str, width: int
) -> None:
    bounded = _bounded(make_record(1, **{column: "u" * (width + 1)}))
    value = getattr(bounded, column)
    assert len(value) == width and value.endswith(ELLIPSIS)
    exact = _bounded(make_record(1, **{column: "u" * width}))
    assert getattr(exact, column) == "u" * width


@pytest.mark.parametrize(
    "raw",
    ["/v1/\udcff", "ab\udcffcd", "\ud800", "nul\x00byte", "é\udce9"],
)
def test_invalid_utf8_and_nul_become_replacement_characters(raw: str) -> None:
    bounded = _bounded(make_record(1, path=raw, project=raw, user=raw))
    for value in (bounded.path, bounded.project, bounded.user):
        assert value is not None
        value.encode("utf-8")  # valid UTF-8 now
        assert "\x00" not in value and "\ufffd" in value
    assert clean_text("ab\udcffcd") == "ab\ufffdcd"  # the original byte, decoded with replacement


def test_non_text_values_in_text_columns_become_text() -> None:
    bounded = _bounded(make_record(1, model=12345, user=["x"], service_tier=None, method=None))
    assert bounded.model == "12345" and bounded.user == "['x']"
    assert bounded.service_tier is None  # nullable column keeps NULL
    assert bounded.method == ""  # NOT NULL column


@pytest.mark.parametrize(
    "bad", [-1, MAX_TOKENS_PER_CALL + 1, 10**17, 10**19, 10**30, 1.5, 1e16, "12", None, True]
)
def test_a_token_count_that_is_not_a_sane_integer_is_refused_with_its_reason(bad: Any) -> None:
    result = bound_record(make_record(1, input_tokens=bad))
    assert isinstance(result, Refused)
    assert "input_tokens" in result.reason
    assert result.record.id == "rec-000000001"


def test_the_largest_sane_token_count_is_stored() -> None:
    record = make_record(1, **dict.fromkeys(TOKEN_COLUMNS, MAX_TOKENS_PER_CALL))
    assert bound_record(record) is record


@pytest.mark.parametrize(
    "cost",
    [
        MONEY_MAX + Decimal("0.0000000001"),
        -MONEY_MAX * 2,
        Decimal("1e30"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("1e999999"),
        1.5,
    ],
)
def test_a_cost_the_column_cannot_hold_makes_the_call_unpriced_with_a_reason(cost: Any) -> None:
    bounded = _bounded(make_record(1, cost_usd=cost))
    assert bounded.cost_usd is None
    assert bounded.unpriced_reason is not None
    assert bounded.unpriced_reason.startswith(("cost_out_of_range", "invalid_cost"))


def test_the_largest_cost_on_every_backend_is_kept() -> None:
    assert _bounded(make_record(1, cost_usd=MONEY_MAX)).cost_usd == MONEY_MAX
    assert _bounded(make_record(1, cost_usd=-MONEY_MAX)).cost_usd == -MONEY_MAX


def test_numbers_outside_their_column_become_null_and_stream_a_bool() -> None:
    bounded = _bounded(
        make_record(1, status_code=2**40, latency_ms=float("nan"), ttft_ms=float("inf"), stream=1)
    )
    assert bounded.status_code is None and bounded.latency_ms is None and bounded.ttft_ms is None
    assert bounded.stream is False


def test_json_maps_are_bounded_and_bad_unit_counts_unprice_the_call() -> None:
    tags = {f"k{i}" + "x" * 100: "v\x00" * 200 for i in range(JSON_MAX_ENTRIES + 5)}
    bounded = _bounded(
        make_record(1, tags=tags, units={"images": Decimal("2"), "bad": Decimal("NaN")})
    )
    assert len(bounded.tags) == JSON_MAX_ENTRIES
    assert all(len(k) <= JSON_KEY_WIDTH for k in bounded.tags)
    assert all("\x00" not in v for v in bounded.tags.values())
    assert bounded.units == {"images": Decimal("2")}
    assert bounded.cost_usd is None and bounded.unpriced_reason == "invalid_units: bad"


@pytest.mark.parametrize(
    "changes",
    [
        {"id": ""},
        {"id": "x" * 65},
        {"id": None},
        {"id": "a\udcff"},
        {"started_at": datetime(2026, 1, 1)},  # naive: the ledger never guesses a timezone
        {"finished_at": "yesterday"},
    ],
)
def test_a_record_without_identity_or_aware_times_is_refused(changes: dict[str, Any]) -> None:
    assert isinstance(bound_record(make_record(1, **changes)), Refused)


def test_bound_text_never_exceeds_the_width() -> None:
    assert bound_text("abcdef", 4) == "abc" + ELLIPSIS
    assert bound_text("abc", None) == "abc"


# -- hypothesis: any record --------------------------------------------------------------------

_ANY_TEXT = st.text(max_size=400) | st.none() | st.integers() | st.binary(max_size=20)
_ANY_INT = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=0, max_value=MAX_TOKENS_PER_CALL)
    | st.floats(allow_nan=True)
    | st.none()
)
_ANY_MONEY = st.decimals(allow_nan=True, allow_infinity=True) | st.none() | st.floats()
_TEXT_FIELDS = [
    "method", "path", "endpoint", "outcome", "request_id", "response_id", "model_requested",
    "model", "service_tier", "team", "project", "organization", "key_fingerprint", "user",
    "usage_source", "estimate_reason", "price_ref", "unpriced_reason",
]  # fmt: skip


@st.composite
def any_record(draw: st.DrawFn, n: int = 0) -> UsageRecord:
    values: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        if draw(st.booleans()):
            values[name] = draw(_ANY_TEXT)
    for name in TOKEN_COLUMNS:
        if draw(st.integers(0, 5)) == 0:
            values[name] = draw(_ANY_INT)
        else:
            values[name] = draw(st.integers(0, 10**6))
    if draw(st.booleans()):
        values["cost_usd"] = draw(_ANY_MONEY)
    if draw(st.booleans()):
        values["tags"] = draw(
            st.dictionaries(st.text(max_size=80), st.text(max_size=300), max_size=70)
        )
    if draw(st.booleans()):
        values["units"] = draw(st.dictionaries(st.text(max_size=10), _ANY_MONEY, max_size=3))
    if draw(st.booleans()):
        values["status_code"] = draw(_ANY_INT)
    if draw(st.booleans()):
        values["latency_ms"] = draw(st.floats() | st.none())
    if draw(st.integers(0, 20)) == 0:
        values["id"] = draw(_ANY_TEXT)
    if draw(st.integers(0, 20)) == 0:
        values["started_at"] = BASE_TIME.replace(tzinfo=None)
    return make_record(n, **values)


@given(record=any_record())
@settings(max_examples=300, deadline=None)
def test_any_record_is_bounded_and_encodable_or_refused_never_an_exception(
    record: UsageRecord,
) -> None:
    result = bound_record(record)
    if isinstance(result, Refused):
        json.loads(row_json(result.record))  # the dead-letter row is always valid ASCII JSON
        assert row_json(result.record).isascii()
        return
    assert bound_record(result) is result  # idempotent: a bounded record passes untouched
    line = record_to_json(result)
    orjson.loads(line)
    assert record_from_json(line).id == result.id
    for column in usage_records.columns:
        value = getattr(result, str(column.name))
        length = getattr(column.type, "length", None)
        if isinstance(value, str):
            value.encode("utf-8")
            assert "\x00" not in value
            assert length is None or len(value) <= length


def test_records_are_plain_dataclasses_for_the_normaliser() -> None:
    # The normaliser builds bounded copies with dataclasses.replace: keep UsageRecord a dataclass.
    assert dataclasses.is_dataclass(UsageRecord)
