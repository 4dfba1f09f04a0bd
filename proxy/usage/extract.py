"""Per-endpoint usage extractors: parsed OpenAI JSON -> ``pricing.usage.Usage`` (pure).

Shapes (transcribed from the OpenAI OpenAPI spec, snapshot f85dbe2 of 2026-08-21):

* Chat / legacy completions ``CompletionUsage``: ``prompt_tokens``, ``completion_tokens`` with
  ``prompt_tokens_details.{cached_tokens, cache_write_tokens, audio_tokens, image_tokens}`` and
  ``completion_tokens_details.{reasoning_tokens, audio_tokens, accepted_prediction_tokens,
  rejected_prediction_tokens}``. Totals include the details.
* Responses / Batch ``ResponseUsage``: ``input_tokens``, ``output_tokens`` with
  ``input_tokens_details.{cached_tokens, cache_write_tokens}`` and
  ``output_tokens_details.reasoning_tokens``.
* Embeddings: ``prompt_tokens`` only.
* Images (gpt-image): ``input_tokens``/``output_tokens`` with ``input_tokens_details.{text,image}_tokens``
  and (optional) ``output_tokens_details.{text,image}_tokens``.
* Transcriptions: ``{"type": "tokens", input_tokens, input_token_details.{text,audio}_tokens,
  output_tokens}`` (note: ``input_token_details``, singular) or ``{"type": "duration", "seconds"}``.
* Realtime-style ``input_token_details`` / ``output_token_details`` are accepted everywhere too.

Missing (or ``null``) counts are 0. A count that is present but not a non-negative integer
(``-1000``, ``"1000"``, ``12.5``, ``true``, an object) or above ``MAX_TOKENS_PER_CALL`` makes the
whole usage object invalid: the extractors raise :class:`InvalidUsage`, and the taps and readers
turn that into an estimated call (``estimate_reason = invalid_usage``) - never a $0 "reported" row.
So does a usage object with neither of its totals (``{}``, ``{"total_tokens": 0}``,
``{"prompt_tokens": null}``): a missing detail count is 0, a missing total is no usage at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pricing.usage import MAX_TOKENS_PER_CALL, Usage

_MAX: Final = MAX_TOKENS_PER_CALL


class InvalidUsage(ValueError):
    """A usage object whose counts cannot be billed as reported."""


def _count(value: Any) -> int:
    """A usage count: a non-negative int up to ``MAX_TOKENS_PER_CALL``; absent/null is 0."""
    if type(value) is int and 0 <= value <= _MAX:  # bool is excluded: type(True) is bool
        return value
    if value is None:
        return 0
    raise InvalidUsage(f"usage count {str(value)[:40]!r} is not a non-negative integer")


def _int(value: Any) -> int:
    if type(value) is int:  # the hot path (bool is excluded: type(True) is bool)
        return value if value > 0 else 0
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if value > 0 else 0
    if isinstance(value, float) and value > 0:
        return int(value)
    return 0


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _details(usage: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        found = usage.get(key)
        if isinstance(found, dict):
            return found
    return {}


def completion_usage(usage: Mapping[str, Any]) -> Usage:
    """Chat completions and legacy completions (``CompletionUsage``)."""
    pin = usage.get("prompt_tokens_details")
    if type(pin) is not dict:
        pin = _details(usage, "prompt_tokens_details", "input_tokens_details")
    out = usage.get("completion_tokens_details")
    if type(out) is not dict:
        out = _details(usage, "completion_tokens_details", "output_tokens_details")
    i, o = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if i is None and o is None:
        raise InvalidUsage("usage has no token counts")
    return _normalized(i, o, pin, out)


def responses_usage(usage: Mapping[str, Any]) -> Usage:
    """Responses, compact, Batch, images and realtime (``input_tokens`` / ``output_tokens``)."""
    pin = usage.get("input_tokens_details")
    if type(pin) is not dict:
        pin = _details(usage, "input_tokens_details", "input_token_details")
    out = usage.get("output_tokens_details")
    if type(out) is not dict:
        out = _details(usage, "output_tokens_details", "output_token_details")
    i, o = usage.get("input_tokens"), usage.get("output_tokens")
    if i is None and o is None:
        raise InvalidUsage("usage has no token counts")
    return _normalized(i, o, pin, out)


def _normalized(i: Any, o: Any, pin: Mapping[str, Any], out: Mapping[str, Any]) -> Usage:
    """Totals + detail dicts -> Usage. Hot path (every call): ``_count`` only for non-int values."""
    cached = pin.get("cached_tokens", 0)
    write = pin.get("cache_write_tokens", 0)
    a_in = pin.get("audio_tokens", 0)
    i_in = pin.get("image_tokens", 0)
    reason = out.get("reasoning_tokens", 0)
    a_out = out.get("audio_tokens", 0)
    i_out = out.get("image_tokens", 0)
    accepted = out.get("accepted_prediction_tokens", 0)
    rejected = out.get("rejected_prediction_tokens", 0)
    m = _MAX
    return Usage(
        input_tokens=i if type(i) is int and 0 <= i <= m else _count(i),
        cached_input_tokens=cached if type(cached) is int and 0 <= cached <= m else _count(cached),
        cache_write_tokens=write if type(write) is int and 0 <= write <= m else _count(write),
        audio_input_tokens=a_in if type(a_in) is int and 0 <= a_in <= m else _count(a_in),
        image_input_tokens=i_in if type(i_in) is int and 0 <= i_in <= m else _count(i_in),
        output_tokens=o if type(o) is int and 0 <= o <= m else _count(o),
        reasoning_tokens=reason if type(reason) is int and 0 <= reason <= m else _count(reason),
        audio_output_tokens=a_out if type(a_out) is int and 0 <= a_out <= m else _count(a_out),
        image_output_tokens=i_out if type(i_out) is int and 0 <= i_out <= m else _count(i_out),
        accepted_prediction_tokens=accepted
        if type(accepted) is int and 0 <= accepted <= m
        else _count(accepted),
        rejected_prediction_tokens=rejected
        if type(rejected) is int and 0 <= rejected <= m
        else _count(rejected),
    )


def image_usage(usage: Mapping[str, Any]) -> Usage:
    """Image endpoints (gpt-image): like Responses, but an image model's output *is* image tokens.

    When ``output_tokens_details`` does not split text and image tokens, every output token is an
    image token — billing them at a text output rate would undercharge (gpt-image-1.5: $10 vs $32).
    """
    normalized = responses_usage(usage)
    if normalized.image_output_tokens or _details(usage, "output_tokens_details"):
        return normalized
    return replace(normalized, image_output_tokens=normalized.output_tokens)


def embeddings_usage(usage: Mapping[str, Any]) -> Usage:
    count = usage.get("prompt_tokens")
    if count is None:
        raise InvalidUsage("usage has no token counts")
    return Usage(input_tokens=_count(count))


def transcription_usage(usage: Mapping[str, Any]) -> Usage:
    """``type: tokens`` -> tokens; ``type: duration`` -> ``audio_seconds`` units (exact Decimal)."""
    if usage.get("type") == "duration" or ("seconds" in usage and "input_tokens" not in usage):
        raw = usage.get("seconds")
        seconds = _decimal(raw)
        if (seconds is None and raw is not None) or (seconds is not None and seconds > _MAX):
            raise InvalidUsage(f"usage seconds {str(raw)[:40]!r} is not a non-negative number")
        return Usage(units={"audio_seconds": seconds}) if seconds is not None else Usage()
    return responses_usage(usage)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        # str() first: a float's repr is the shortest exact decimal of what OpenAI sent.
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() and result >= 0 else None


def usage_for_shape(usage: Mapping[str, Any]) -> Usage:
    """Whatever the shape, pick the right reader (used for SSE terminal events of any endpoint)."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        if "completion_tokens" in usage:
            return completion_usage(usage)
        return embeddings_usage(usage)
    if usage.get("type") in ("tokens", "duration") or "seconds" in usage:
        return transcription_usage(usage)
    return responses_usage(usage)


# --- built-in tools (Responses ``output[]``) ----------------------------------------------------


class ToolCounter:
    """Counts per-call tool fees: ``web_search_call`` and ``file_search_call`` items, distinct
    ``code_interpreter_call.container_id`` values. Items are de-duplicated by their ``id`` so a
    stream's ``output_item.done`` events and the terminal ``output[]`` never count twice."""

    __slots__ = ("_containers", "_file", "_seen", "_web")

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._web = 0
        self._file = 0
        self._containers: set[str] = set()

    def add(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind not in ("web_search_call", "file_search_call", "code_interpreter_call"):
            return
        item_id = item.get("id")
        if isinstance(item_id, str):
            if item_id in self._seen:
                return
            self._seen.add(item_id)
        if kind == "web_search_call":
            self._web += 1
        elif kind == "file_search_call":
            self._file += 1
        else:
            container = item.get("container_id")
            if isinstance(container, str) and container:
                self._containers.add(container)

    def add_all(self, items: Any) -> None:
        if isinstance(items, list):
            for item in items:
                self.add(item)

    def units(self) -> dict[str, Decimal]:
        units: dict[str, Decimal] = {}
        if self._web:
            units["web_search_calls"] = Decimal(self._web)
        if self._file:
            units["file_search_calls"] = Decimal(self._file)
        if self._containers:
            units["containers"] = Decimal(len(self._containers))
        return units


def tool_units(output: Iterable[Any]) -> dict[str, Decimal]:
    counter = ToolCounter()
    for item in output:
        counter.add(item)
    return counter.units()


# --- per-unit endpoints priced from the request ----------------------------------------------


def dalle_image_units(
    request: Mapping[str, Any], images_returned: int | None
) -> dict[str, Decimal]:
    """DALL·E returns no usage: ``image:<quality>:<size>`` x n from the request (defaults per spec:
    quality ``standard``, size ``1024x1024``, n 1). ``images_returned`` (``len(data)``) wins over n."""
    quality = request.get("quality")
    quality = quality if isinstance(quality, str) and quality and quality != "auto" else "standard"
    size = request.get("size")
    size = size if isinstance(size, str) and size and size != "auto" else "1024x1024"
    count = images_returned if images_returned is not None else _int(request.get("n")) or 1
    return {f"image:{quality}:{size}": Decimal(count)} if count else {}


def speech_characters(request: Mapping[str, Any]) -> dict[str, Decimal]:
    text = request.get("input")
    return {"characters": Decimal(len(text))} if isinstance(text, str) else {}


def obj(value: Any) -> Mapping[str, Any]:
    """A dict or an empty mapping (for callers walking untrusted JSON)."""
    return _obj(value)
