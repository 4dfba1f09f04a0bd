"""The Admin API's page / bucket / result shapes (openai/openai-openapi ``UsageResponse``,
``UsageTimeBucket``, ``CostsResult``, ``Usage*Result``), read strictly: a wrong number stops the
comparison with a message naming the field, it never skews it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin.reconcile.shapes import (
    USAGE_FIELDS,
    AdminShapeError,
    cost_results,
    parse_page,
    usage_results,
)

DAY_START = 1795305600  # 2026-11-22T00:00:00Z


def _bucket(*results: dict[str, Any], start: Any = DAY_START) -> dict[str, Any]:
    return {
        "object": "bucket",
        "start_time": start,
        "end_time": DAY_START + 86400,
        "results": list(results),
    }


# The spec's own examples (x-oaiMeta), transcribed.
SPEC_COMPLETIONS = {
    "object": "organization.usage.completions.result",
    "input_tokens": 5000, "input_cached_tokens": 1800, "input_cache_write_tokens": 200,
    "input_uncached_tokens": 3000, "output_tokens": 1000, "input_text_tokens": 2500,
    "output_text_tokens": 800, "input_cached_text_tokens": 1500, "input_audio_tokens": 300,
    "input_cached_audio_tokens": 100, "output_audio_tokens": 100, "input_image_tokens": 200,
    "input_cached_image_tokens": 200, "output_image_tokens": 100, "num_model_requests": 5,
    "project_id": "proj_abc", "user_id": "user-abc", "api_key_id": "key_abc",
    "model": "gpt-4o-mini-2024-07-18", "batch": False, "service_tier": "default",
}  # fmt: skip
SPEC_COSTS_PAGE = (
    b'{"object": "page", "data": [{"object": "bucket", "start_time": 1730419200, '
    b'"end_time": 1730505600, "results": [{"object": "organization.costs.result", '
    b'"amount": {"value": 0.06, "currency": "usd"}, "line_item": null, "project_id": null, '
    b'"api_key_id": null, "quantity": null, "quantity_unit": null}]}], "has_more": false, '
    b'"next_page": null}'
)


def test_the_specs_completions_example() -> None:
    (result,) = usage_results("completions", _bucket(SPEC_COMPLETIONS))
    assert result.day == date(2026, 11, 22)
    assert (result.project, result.model, result.api_key_id) == (
        "proj_abc",
        "gpt-4o-mini-2024-07-18",
        "key_abc",
    )
    assert result.counts == {
        "requests": 5,
        "input_tokens": 5000,
        "cached_input_tokens": 1800,
        "cache_write_tokens": 200,
        "output_tokens": 1000,
        "audio_input_tokens": 300,
        "audio_output_tokens": 100,
        "image_input_tokens": 200,
        "image_output_tokens": 100,
    }


def test_the_specs_costs_example_is_read_exactly() -> None:
    page = parse_page(SPEC_COSTS_PAGE)
    (cost,) = cost_results(page.buckets[0])
    assert cost.amount == Decimal(
        "0.06"
    )  # not 0.059999999999999997779553950749686919152736663818359375
    assert cost.project is None and cost.day == date(2024, 11, 1)
    assert not page.has_more and page.next_page is None


def test_absent_optional_counters_are_zero_but_requests_are_required() -> None:
    (result,) = usage_results("completions", _bucket({"num_model_requests": 1, "input_tokens": 3}))
    assert result.counts["output_tokens"] == 0
    with pytest.raises(AdminShapeError, match="num_model_requests"):
        usage_results("embeddings", _bucket({"input_tokens": 3}))


@pytest.mark.parametrize("value", [-1, 1.5, "12", True, None, 2**63, [], {}], ids=repr)
def test_a_bad_count_names_the_field(value: Any) -> None:
    result = {"num_model_requests": 1, "input_tokens": value}
    if value is None:
        assert usage_results("embeddings", _bucket(result))[0].counts["input_tokens"] == 0
        return
    with pytest.raises(AdminShapeError, match="input_tokens"):
        usage_results("embeddings", _bucket(result))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"object": "list", "data": [], "has_more": false, "next_page": null}',
        b'{"object": "page", "data": {}, "has_more": false, "next_page": null}',
        b'{"object": "page", "data": [1], "has_more": false, "next_page": null}',
        b'{"object": "page", "data": [], "has_more": "no", "next_page": null}',
        b'{"object": "page", "data": [], "has_more": true, "next_page": null}',
        b'{"object": "page", "data": [], "has_more": true, "next_page": ""}',
        b'{"object": "page", "data": [], "has_more": false, "next_page": 7}',
    ],
)
def test_a_bad_page_is_refused(body: bytes) -> None:
    with pytest.raises(AdminShapeError):
        parse_page(body)


@pytest.mark.parametrize(
    "amount",
    [
        {"value": "0.5", "currency": "usd"},
        {"value": True, "currency": "usd"},
        {"value": 1, "currency": "eur"},
        {"value": 1},
        {"currency": "usd"},
        None,
        {"value": 10**13, "currency": "usd"},
    ],
)
def test_a_bad_amount_is_refused(amount: Any) -> None:
    result = {"object": "organization.costs.result", "amount": amount}
    with pytest.raises(AdminShapeError):
        cost_results(_bucket(result))


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_amounts_never_pass(text: bytes) -> None:
    body = (
        b'{"object": "page", "data": [{"object": "bucket", "start_time": 0, "end_time": 1, '
        b'"results": [{"amount": {"value": ' + text + b', "currency": "usd"}}]}], '
        b'"has_more": false, "next_page": null}'
    )
    with pytest.raises(AdminShapeError):
        cost_results(parse_page(body).buckets[0])


@pytest.mark.parametrize("start", [None, "1795305600", 1.5, True, 10**20, -(10**20)])
def test_a_bad_bucket_start_is_refused(start: Any) -> None:
    with pytest.raises(AdminShapeError, match="start_time"):
        usage_results("completions", _bucket(start=start))


@pytest.mark.parametrize("name", ["project_id", "model", "api_key_id"])
@pytest.mark.parametrize("value", ["", "x" * 256, 5, ["proj"]])
def test_a_bad_dimension_is_refused(name: str, value: Any) -> None:
    result = {"num_model_requests": 1, name: value}
    with pytest.raises(AdminShapeError, match=name):
        usage_results("moderations", _bucket(result))


@given(
    st.sampled_from(sorted(USAGE_FIELDS)),
    st.lists(
        st.dictionaries(
            st.sampled_from(["num_model_requests", "input_tokens", "output_tokens", "images",
                             "characters", "seconds", "input_cached_tokens"]),
            st.integers(0, 2**63 - 1),
        ),
        max_size=5,
    ),
)  # fmt: skip
def test_any_documented_result_round_trips_its_counts(
    source: str, results: list[dict[str, int]]
) -> None:
    for result in results:
        result["num_model_requests"] = result.get("num_model_requests", 0)
    body = orjson.dumps(
        {"object": "page", "data": [_bucket(*results)], "has_more": False, "next_page": None}
    )
    parsed = usage_results(source, parse_page(body).buckets[0])
    for result, got in zip(results, parsed, strict=True):
        for ours, theirs in USAGE_FIELDS[source].items():
            assert got.counts[ours] == result.get(theirs, 0)


def test_a_million_results_are_read() -> None:
    results = [{"num_model_requests": 1, "input_tokens": n} for n in range(1_000_000)]
    parsed = usage_results("embeddings", _bucket(*results))
    assert sum(r.counts["input_tokens"] for r in parsed) == sum(range(1_000_000))
