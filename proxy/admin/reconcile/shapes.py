"""OpenAI's Admin API Usage and Costs pages, parsed into plain rows (pure, no I/O).

Shapes transcribed from OpenAI's published OpenAPI description (``openai/openai-openapi``,
``openapi.yaml``: paths ``/organization/costs`` and ``/organization/usage/*``; schemas
``UsageResponse``, ``UsageTimeBucket``, ``CostsResult``, ``UsageCompletionsResult``,
``UsageEmbeddingsResult``, ``UsageModerationsResult``, ``UsageImagesResult``,
``UsageAudioSpeechesResult``, ``UsageAudioTranscriptionsResult``):

* a page is ``{"object": "page", "data": [bucket], "has_more": bool, "next_page": str | null}``;
* a bucket is ``{"object": "bucket", "start_time": int, "end_time": int, "results": [result]}``
  (unix seconds; ``bucket_width=1d`` buckets are UTC days);
* a costs result has ``amount: {value: number, currency: "usd"}``, and ``project_id``,
  ``line_item``, ``api_key_id``, ``quantity``, ``quantity_unit`` (null unless grouped by them);
* a usage result has ``num_model_requests`` and its endpoint's counters (completions:
  ``input_tokens``, ``input_cached_tokens``, ``input_cache_write_tokens``, ``output_tokens``,
  ``input_audio_tokens``, ``output_audio_tokens``, ``input_image_tokens``, ``output_image_tokens``,
  ...), and ``project_id`` / ``model`` / ``api_key_id`` / ``user_id`` (null unless grouped by).

``amount.value`` is a JSON number: it is parsed from its text straight into :class:`Decimal`
(``json.loads(parse_float=Decimal)``), never through a float. Anything else than the documented
types (a negative or non-integer count, a non-finite amount, a currency other than USD) is an
:class:`AdminShapeError` naming the field: a wrong number must stop the comparison, not skew it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

# Our counter name -> the usage result field that carries it, per usage endpoint.
USAGE_FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    "completions": {
        "requests": "num_model_requests",
        "input_tokens": "input_tokens",
        "cached_input_tokens": "input_cached_tokens",
        "cache_write_tokens": "input_cache_write_tokens",
        "output_tokens": "output_tokens",
        "audio_input_tokens": "input_audio_tokens",
        "audio_output_tokens": "output_audio_tokens",
        "image_input_tokens": "input_image_tokens",
        "image_output_tokens": "output_image_tokens",
    },
    "embeddings": {"requests": "num_model_requests", "input_tokens": "input_tokens"},
    "moderations": {"requests": "num_model_requests", "input_tokens": "input_tokens"},
    "images": {"requests": "num_model_requests", "images": "images"},
    "audio_speeches": {"requests": "num_model_requests", "characters": "characters"},
    "audio_transcriptions": {"requests": "num_model_requests", "audio_seconds": "seconds"},
}
"""The usage endpoints read (``/v1/organization/usage/{name}``), all grouped by project and model.
vector_stores, code_interpreter_sessions, file_search_calls and web_search_calls have no model
dimension (and no per-model ledger counterpart) and are not read."""

USAGE_SOURCES: Final[tuple[str, ...]] = tuple(USAGE_FIELDS)
REQUIRED_FIELDS: Final[frozenset[str]] = frozenset({"num_model_requests"})
MAX_COUNT: Final = 2**63 - 1  # the ledger's BIGINT


class AdminShapeError(ValueError):
    """A page or result that does not have the documented shape; the message names the field."""


@dataclass(frozen=True, slots=True)
class Page:
    buckets: tuple[Mapping[str, Any], ...]
    has_more: bool
    next_page: str | None


@dataclass(frozen=True, slots=True)
class UsageResult:
    """One usage result of one daily bucket: counters by our names (absent ones are 0)."""

    source: str
    day: date
    project: str | None
    model: str | None
    api_key_id: str | None
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class CostResult:
    day: date
    project: str | None
    line_item: str | None
    amount: Decimal


def parse_json(body: bytes) -> Any:
    """JSON with every non-integer number as an exact :class:`Decimal`."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdminShapeError(f"not JSON: {type(exc).__name__}") from None


def _no_constant(name: str) -> Any:
    raise AdminShapeError(f"{name} is not a number")


def parse_page(body: bytes) -> Page:
    data = parse_json(body)
    if not isinstance(data, dict) or data.get("object") != "page":
        raise AdminShapeError("expected an object with object='page'")
    buckets = data.get("data")
    if not isinstance(buckets, list) or not all(isinstance(b, dict) for b in buckets):
        raise AdminShapeError("page.data must be a list of buckets")
    has_more = data.get("has_more")
    if not isinstance(has_more, bool):
        raise AdminShapeError("page.has_more must be a boolean")
    next_page = data.get("next_page")
    if next_page is not None and (not isinstance(next_page, str) or not next_page):
        raise AdminShapeError("page.next_page must be a non-empty string or null")
    if has_more and next_page is None:
        raise AdminShapeError("page.has_more is true but next_page is null")
    return Page(tuple(buckets), has_more, next_page)


def _bucket_day(bucket: Mapping[str, Any]) -> tuple[date, list[Any]]:
    if bucket.get("object") != "bucket":
        raise AdminShapeError("expected a bucket with object='bucket'")
    start = bucket.get("start_time")
    if not isinstance(start, int) or isinstance(start, bool):
        raise AdminShapeError("bucket.start_time must be an integer (unix seconds)")
    try:
        day = datetime.fromtimestamp(start, UTC).date()
    except (OverflowError, OSError, ValueError):
        raise AdminShapeError(f"bucket.start_time {start} is out of range") from None
    results = bucket.get("results")
    if not isinstance(results, list):
        raise AdminShapeError("bucket.results must be a list")
    return day, results


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(result: Mapping[str, Any], name: str, required: bool) -> int:
    value = result.get(name)
    if value is None:
        if required:
            raise AdminShapeError(f"usage result lacks {name}")
        return 0
    if not _is_int(value) or value < 0 or value > MAX_COUNT:
        raise AdminShapeError(f"usage result {name} must be a non-negative integer")
    return int(value)


def _text(result: Mapping[str, Any], name: str) -> str | None:
    value = result.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise AdminShapeError(f"{name} must be a string of 1-255 characters or null")
    return value


def usage_results(source: str, bucket: Mapping[str, Any]) -> list[UsageResult]:
    fields = USAGE_FIELDS[source]
    day, results = _bucket_day(bucket)
    out: list[UsageResult] = []
    for result in results:
        if not isinstance(result, dict):
            raise AdminShapeError("a bucket result must be an object")
        counts = {
            ours: _count(result, theirs, theirs in REQUIRED_FIELDS)
            for ours, theirs in fields.items()
        }
        out.append(
            UsageResult(
                source=source,
                day=day,
                project=_text(result, "project_id"),
                model=_text(result, "model"),
                api_key_id=_text(result, "api_key_id"),
                counts=counts,
            )
        )
    return out


def cost_results(bucket: Mapping[str, Any]) -> list[CostResult]:
    day, results = _bucket_day(bucket)
    out: list[CostResult] = []
    for result in results:
        if not isinstance(result, dict):
            raise AdminShapeError("a bucket result must be an object")
        amount = result.get("amount")
        if not isinstance(amount, dict):
            raise AdminShapeError("costs result lacks amount")
        value = amount.get("value")
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise AdminShapeError("amount.value must be a number")
        value = Decimal(value)
        if not value.is_finite() or abs(value) > Decimal("1e12"):
            raise AdminShapeError("amount.value must be a finite amount")
        currency = amount.get("currency")
        if not isinstance(currency, str) or currency.lower() != "usd":
            raise AdminShapeError(f"amount.currency must be usd, got {str(currency)[:16]!r}")
        out.append(
            CostResult(
                day=day,
                project=_text(result, "project_id"),
                line_item=_text(result, "line_item"),
                amount=value,
            )
        )
    return out
