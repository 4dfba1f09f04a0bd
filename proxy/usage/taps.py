"""Taps: read a copy of one response body as it streams and say what it consumed (pure).

Hot-path rules: a JSON body is parsed once, at its end; an SSE stream is decoded into events but
only the few usage-bearing ones are JSON-decoded (found with a substring test on the raw bytes).
Delta events are kept as raw bytes and decoded only if usage never arrives (estimation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from pricing.usage import Usage
from proxy.http.observation import Observation
from proxy.usage.extract import ToolCounter, completion_usage, usage_for_shape
from proxy.usage.readers import Reader, response_observation
from proxy.usage.sse import SSEDecoder, SSEEvent

# Retained raw delta payloads (for estimation) are capped; beyond it, later deltas are counted
# and the estimate is scaled by events seen / events kept.
MAX_RETAINED_BYTES: Final = 8 * 1024 * 1024
_HEAD_BYTES: Final = 64 * 1024
_TAIL_BYTES: Final = 256 * 1024


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _cut_reason(complete: bool) -> str | None:
    return None if complete else "stream_cut"


class JsonBodyTap:
    """Buffers a JSON body (bounded) and hands the parsed object to a reader at the end.

    Bodies over ``max_bytes`` (e.g. float embeddings for big batches) keep only a head and a tail
    window; ``usage`` (always near the end) is then read from the tail and ``model`` from either.
    """

    __slots__ = ("_chunks", "_head", "_max", "_overflow", "_reader", "_size", "_tail")

    def __init__(self, reader: Reader, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._reader = reader
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflow = False
        self._head = b""
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            self._tail = (self._tail + chunk)[-_TAIL_BYTES:]
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._max:
            whole = b"".join(self._chunks)
            self._chunks = []
            self._head = whole[:_HEAD_BYTES]
            self._tail = whole[-_TAIL_BYTES:]
            self._overflow = True

    def finish(self, *, complete: bool) -> Observation:
        if self._overflow:
            body: Mapping[str, Any] | None = _skim(self._head, self._tail)
        else:
            parsed = _loads(b"".join(self._chunks)) if self._chunks else None
            body = parsed if isinstance(parsed, dict) else None
        self._chunks = []
        obs = self._reader(body if complete else None)
        if not complete and obs.usage is None:
            return _replace(obs, estimate_reason="stream_cut")
        return obs


_MODEL_RE: Final = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


def _skim(head: bytes, tail: bytes) -> dict[str, Any]:
    """Top-level ``usage`` and ``model`` of an oversized body, from its head and tail only."""
    found: dict[str, Any] = {}
    text = tail.decode("utf-8", "replace")
    at = text.rfind('"usage"')
    if at >= 0:
        start = text.find("{", at)
        if start >= 0:
            try:
                usage, _ = json.JSONDecoder().raw_decode(text, start)
            except ValueError:
                usage = None
            if isinstance(usage, dict):
                found["usage"] = usage
    models = _MODEL_RE.findall(tail) or _MODEL_RE.findall(head)
    if models:
        found["model"] = models[-1].decode("utf-8", "replace")
    return found


def _replace(obs: Observation, **changes: Any) -> Observation:
    from dataclasses import replace

    return replace(obs, **changes)


class _Retained:
    """Raw delta payloads kept for estimation, bounded."""

    __slots__ = ("bytes", "dropped", "items")

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.bytes = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        if self.bytes + len(data) > MAX_RETAINED_BYTES:
            self.dropped += 1
            return
        self.items.append(data)
        self.bytes += len(data)

    def scale(self) -> float:
        kept = len(self.items)
        return (kept + self.dropped) / kept if kept and self.dropped else 1.0


def _scaled_text(parts: list[str], retained: _Retained) -> str:
    text = "".join(parts)
    factor = retained.scale()
    if factor > 1.0 and text:
        # Repeat the seen text proportionally: the estimator counts tokens, not meaning.
        whole = int(factor)
        text = text * whole + text[: int(len(text) * (factor - whole))]
    return text


class ChatStreamTap:
    """``chat.completion.chunk`` / ``text_completion`` streams.

    Usage is on the single chunk whose ``usage`` is non-null (``include_usage``); model, id and
    service tier come from the first chunk (and the usage chunk, which wins).
    """

    __slots__ = (
        "_decoder",
        "_error",
        "_first",
        "_model",
        "_response_id",
        "_retained",
        "_tier",
        "_usage",
    )

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._first = True
        self._model: str | None = None
        self._tier: str | None = None
        self._response_id: str | None = None
        self._usage: Usage | None = None
        self._error = False
        self._retained = _Retained()

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            data = event.data
            if (
                self._first
                or data[:1] != b"{"
                or data[:8] == b'{"error"'
                or (b'"usage"' in data and b'"usage":null' not in data)
            ):
                self._event(event)
            else:  # a plain delta (almost every event): what ``_event`` does, inline
                retained = self._retained
                size = len(data)
                if retained.bytes + size > MAX_RETAINED_BYTES:
                    retained.dropped += 1  # as _Retained.add
                else:
                    retained.items.append(data)
                    retained.bytes += size

    def _event(self, event: SSEEvent) -> None:
        data = event.data
        if data[:1] != b"{":
            return  # [DONE] or junk
        if self._first or (b'"usage"' in data and b'"usage":null' not in data):
            obj = _loads(data)
            if not isinstance(obj, dict):
                return
            if self._first:
                self._first = False
                self._remember(obj)
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self._usage = completion_usage(usage)
                self._remember(obj)
                return
            if "error" in obj:
                self._error = True
                return
        elif b'"error"' in data and data.startswith(b'{"error"'):
            self._error = True
            return
        self._retained.add(data)

    def _remember(self, obj: Mapping[str, Any]) -> None:
        model, tier, rid = obj.get("model"), obj.get("service_tier"), obj.get("id")
        if isinstance(model, str) and model:
            self._model = model
        if isinstance(tier, str) and tier:
            self._tier = tier
        if isinstance(rid, str) and rid:
            self._response_id = rid

    def finish(self, *, complete: bool) -> Observation:
        for event in self._decoder.finish():
            self._event(event)
        if self._usage is not None:
            return Observation(
                usage=self._usage,
                source="reported",
                model=self._model,
                service_tier=self._tier,
                response_id=self._response_id,
            )
        reason = _cut_reason(complete) or ("stream_error" if self._error else "no_usage")
        return Observation(
            usage=None,
            source="none",
            model=self._model,
            service_tier=self._tier,
            response_id=self._response_id,
            estimate_reason=reason,
            usage_expected=True,
            output_text=self._output_text(),
        )

    def _output_text(self) -> str:
        parts: list[str] = []
        for raw in self._retained.items:
            obj = _loads(raw)
            choices = obj.get("choices") if isinstance(obj, dict) else None
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                text = choice.get("text")  # legacy completions
                if isinstance(text, str):
                    parts.append(text)
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    continue
                for key in ("content", "refusal"):
                    value = delta.get(key)
                    if isinstance(value, str):
                        parts.append(value)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        fn = call.get("function") if isinstance(call, dict) else None
                        if isinstance(fn, dict):
                            for key in ("name", "arguments"):
                                value = fn.get(key)
                                if isinstance(value, str):
                                    parts.append(value)
        return _scaled_text(parts, self._retained)


_TERMINAL_EVENTS: Final = frozenset(
    {b"response.completed", b"response.incomplete", b"response.failed"}
)
_HEADER_EVENTS: Final = frozenset(
    {b"response.created", b"response.queued", b"response.in_progress"}
)
_DELTA_EVENTS: Final = frozenset(
    {
        b"response.output_text.delta",
        b"response.refusal.delta",
        b"response.function_call_arguments.delta",
        b"response.custom_tool_call_input.delta",
        b"response.reasoning_summary_text.delta",
    }
)


def _event_type(event: SSEEvent) -> bytes:
    if event.event:
        return event.event
    # No ``event:`` line: the type is the first field of the data (``{"type":"…"``).
    data = event.data
    if data.startswith(b'{"type":"'):
        end = data.find(b'"', 9)
        if end > 0:
            return data[9:end]
    obj = _loads(data)
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind.encode() if isinstance(kind, str) else b""


class ResponsesStreamTap:
    """Responses streams: usage on the terminal ``response.completed|incomplete|failed`` event;
    tool calls from ``response.output_item.done`` (and the terminal ``output[]``)."""

    __slots__ = (
        "_decoder",
        "_dedupe",
        "_error",
        "_fallback_model",
        "_header",
        "_retained",
        "_terminal",
        "_tools",
    )

    def __init__(self, *, dedupe: bool, fallback_model: str | None = None) -> None:
        self._decoder = SSEDecoder()
        self._dedupe = dedupe
        self._fallback_model = fallback_model
        self._header: Mapping[str, Any] | None = None
        self._terminal: Observation | None = None
        self._tools = ToolCounter()
        self._retained = _Retained()
        self._error = False

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            self._event(event)

    def _event(self, event: SSEEvent) -> None:
        kind = _event_type(event)
        if kind in _DELTA_EVENTS:
            self._retained.add(event.data)
        elif kind == b"response.output_item.done":
            obj = _loads(event.data)
            if isinstance(obj, dict):
                self._tools.add(obj.get("item"))
        elif kind in _TERMINAL_EVENTS or (kind in _HEADER_EVENTS and self._header is None):
            obj = _loads(event.data)
            response = obj.get("response") if isinstance(obj, dict) else None
            if not isinstance(response, dict):
                return
            if kind in _TERMINAL_EVENTS:
                self._terminal = response_observation(
                    response,
                    dedupe=self._dedupe,
                    tools=self._tools,
                    fallback_model=self._fallback_model,
                )
            else:
                self._header = response
        elif kind == b"error":
            self._error = True

    def finish(self, *, complete: bool) -> Observation:
        for event in self._decoder.finish():
            self._event(event)
        terminal = self._terminal
        if terminal is not None and terminal.source == "reported":
            return terminal
        header = self._header or {}
        units = self._tools.units()
        model = header.get("model")
        tier = header.get("service_tier")
        rid = header.get("id")
        if terminal is not None:
            status = terminal.extra.get("status")
            reason = f"response_{status}" if status else "no_usage"
        else:
            reason = _cut_reason(complete) or ("stream_error" if self._error else "no_usage")
        return Observation(
            usage=Usage(units=units) if units else None,
            source="none",
            model=(terminal.model if terminal else None)
            or (model if isinstance(model, str) else None)
            or self._fallback_model,
            service_tier=(terminal.service_tier if terminal else None)
            or (tier if isinstance(tier, str) else None),
            response_id=(terminal.response_id if terminal else None)
            or (rid if isinstance(rid, str) else None),
            estimate_reason=reason,
            usage_expected=True,
            output_text=self._output_text(),
        )

    def _output_text(self) -> str:
        parts: list[str] = []
        for raw in self._retained.items:
            obj = _loads(raw)
            delta = obj.get("delta") if isinstance(obj, dict) else None
            if isinstance(delta, str):
                parts.append(delta)
        return _scaled_text(parts, self._retained)


class UsageEventStreamTap:
    """Other SSE endpoints whose last event carries ``usage`` (``image_generation.completed``,
    ``image_edit.completed``, ``transcript.text.done``, ``speech.audio.done``)."""

    __slots__ = ("_decoder", "_model", "_usage")

    def __init__(self, *, model: str | None) -> None:
        self._decoder = SSEDecoder()
        self._model = model
        self._usage: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            self._event(event)

    def _event(self, event: SSEEvent) -> None:
        if b'"usage"' not in event.data:
            return
        obj = _loads(event.data)
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict):
            self._usage = usage_for_shape(usage)

    def finish(self, *, complete: bool) -> Observation:
        for event in self._decoder.finish():
            self._event(event)
        if self._usage is not None:
            return Observation(usage=self._usage, source="reported", model=self._model)
        return Observation(
            usage=None,
            source="none",
            model=self._model,
            estimate_reason=_cut_reason(complete) or "no_usage",
            usage_expected=True,
        )


class FixedTap:
    """Ignores the body; the observation is known from the request (e.g. tts-1 characters)."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[bool], Observation]) -> None:
        self._make = make

    def feed(self, chunk: bytes) -> None:
        return None

    def finish(self, *, complete: bool) -> Observation:
        return self._make(complete)
