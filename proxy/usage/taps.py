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
from proxy.usage.extract import InvalidUsage, ToolCounter, completion_usage, usage_for_shape
from proxy.usage.readers import Reader, response_observation
from proxy.usage.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent

# Retained raw delta payloads (for estimation) are capped; beyond it, later deltas are counted
# and the estimate is scaled by events seen / events kept.
MAX_RETAINED_BYTES: Final = 8 * 1024 * 1024
_HEAD_BYTES: Final = 64 * 1024
_TAIL_BYTES: Final = 256 * 1024
# Larger JSON bodies are skimmed, not parsed (a whole parse would hold the event loop too long).
PARSE_WHOLE_BYTES: Final = 1024 * 1024


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _stream_reason(complete: bool, decoder: SSEDecoder, invalid: bool, error: bool) -> str:
    """Why a stream's usage is estimated (the first that applies)."""
    if not complete:
        return "stream_cut"
    if invalid:
        return "invalid_usage"
    if decoder.oversized:
        return "oversized_event"  # an event over metering.max_event_bytes was not read
    return "stream_error" if error else "no_usage"


class JsonBodyTap:
    """Buffers a JSON body (bounded) and hands the parsed object to a reader at the end.

    Bodies up to ``PARSE_WHOLE_BYTES`` are parsed whole (a few ms at most). Larger ones (float
    embeddings for big batches, chat with logprobs, base64 images) are never parsed whole on the
    event loop - orjson holds the GIL, so a thread would not help: ~6 ms per MB of floats. Their
    top-level fields are skimmed instead: ``usage`` from the tail (OpenAI puts it after the big
    arrays), ``id`` / ``status`` from the head (they come first), ``model`` / ``service_tier`` from
    either, and built-in tool items counted as the chunks pass (``_ToolScan``). Bodies over
    ``max_bytes`` are not even kept: only the head and tail windows are.
    """

    __slots__ = (
        "_chunks",
        "_head",
        "_max",
        "_overflow",
        "_reader",
        "_size",
        "_tail",
        "_tail_size",
        "_tools",
    )

    def __init__(self, reader: Reader, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._reader = reader
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflow = False
        self._head = b""
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._tools = _ToolScan()

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            self._tools.feed(chunk)
            self._keep_tail(chunk)
            return
        self._chunks.append(chunk)
        before = self._size
        self._size += len(chunk)
        if self._size > PARSE_WHOLE_BYTES or self._size > self._max:
            # Too large to parse: count tool items as the chunks pass (the ones kept so far once).
            scanned = before > PARSE_WHOLE_BYTES or before > self._max
            for piece in (chunk,) if scanned else self._chunks:
                self._tools.feed(piece)
        if self._size > self._max:
            whole = b"".join(self._chunks)
            self._chunks = []
            self._head = whole[:_HEAD_BYTES]
            self._keep_tail(whole[-_TAIL_BYTES:])
            self._overflow = True

    def _keep_tail(self, chunk: bytes) -> None:
        # A list of pieces trimmed from the front: each byte is copied once, whatever the chunking.
        self._tail.append(chunk)
        self._tail_size += len(chunk)
        while self._tail_size - len(self._tail[0]) >= _TAIL_BYTES:
            self._tail_size -= len(self._tail.pop(0))

    def finish(self, *, complete: bool) -> Observation:
        body: Mapping[str, Any] | None
        if self._overflow:
            body = _skim(self._head, b"".join(self._tail)[-_TAIL_BYTES:], self._tools)
        elif self._size > PARSE_WHOLE_BYTES:
            # Only the two windows are joined (a 64 MB join alone is ~10-30 ms of memcpy here).
            body = _skim(_head_of(self._chunks), _tail_of(self._chunks), self._tools)
        else:
            parsed = _loads(b"".join(self._chunks)) if self._chunks else None
            body = parsed if isinstance(parsed, dict) else None
        self._chunks = []
        self._tail = []
        try:
            obs = self._reader(body if complete else None)
        except InvalidUsage:
            model = body.get("model") if body is not None else None
            return invalid_usage(model if isinstance(model, str) and model else None)
        if not complete and obs.usage is None:
            return _replace(obs, estimate_reason="stream_cut")
        return obs


def _head_of(chunks: list[bytes]) -> bytes:
    taken: list[bytes] = []
    size = 0
    for chunk in chunks:
        if size >= _HEAD_BYTES:
            break
        taken.append(chunk)
        size += len(chunk)
    return b"".join(taken)[:_HEAD_BYTES]


def _tail_of(chunks: list[bytes]) -> bytes:
    taken: list[bytes] = []
    size = 0
    for chunk in reversed(chunks):
        if size >= _TAIL_BYTES:
            break
        taken.append(chunk)
        size += len(chunk)
    return b"".join(reversed(taken))[-_TAIL_BYTES:]


def invalid_usage(model: str | None, **fields: Any) -> Observation:
    """A response whose usage could not be billed as reported: the meter estimates it."""
    return Observation(
        usage=None,
        source="none",
        model=model,
        estimate_reason="invalid_usage",
        usage_expected=True,
        **fields,
    )


_MODEL_RE: Final = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_ID_RE: Final = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')
_STATUS_RE: Final = re.compile(rb'"status"\s*:\s*"([^"\\]{1,64})"')
_TIER_RE: Final = re.compile(rb'"service_tier"\s*:\s*"([^"\\]{1,64})"')
_USAGE_RE: Final = re.compile(r'"usage"\s*:\s*\{')


class _ToolScan:
    """Counts built-in tool items (``"type":"web_search_call"`` ...) and distinct container ids in
    a body as it passes, chunk by chunk (a short overlap catches a token cut between chunks).
    Used only when the body is too large to parse; a non-streamed body lists each item once."""

    __slots__ = ("_containers", "_counts", "_overlap")

    _TOKEN: Final = re.compile(
        rb'"type"\s*:\s*"(web_search_call|file_search_call)"|"container_id"\s*:\s*"([^"\\]{1,200})"'
    )
    _KEEP: Final = 256

    def __init__(self) -> None:
        self._overlap = b""
        self._counts = {b"web_search_call": 0, b"file_search_call": 0}
        self._containers: set[bytes] = set()

    def feed(self, chunk: bytes) -> None:
        if b"_call" not in chunk and b"container_id" not in chunk and not self._overlap:
            return
        data = self._overlap + chunk
        skip = len(self._overlap)  # tokens that end inside the overlap were counted already
        for match in self._TOKEN.finditer(data):
            if match.end() <= skip:
                continue
            if match.group(1):
                self._counts[match.group(1)] += 1
            else:
                self._containers.add(match.group(2))
        tail = data[-self._KEEP :]
        self._overlap = tail if (b"_call" in tail or b"container_id" in tail) else b""

    def items(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for kind, count in self._counts.items():
            found.extend({"type": kind.decode()} for _ in range(count))
        found.extend(
            {"type": "code_interpreter_call", "container_id": c.decode("utf-8", "replace")}
            for c in self._containers
        )
        return found


def _first(pattern: re.Pattern[bytes], *windows: bytes, last: bool = False) -> str | None:
    for window in windows:
        found = pattern.findall(window)
        if found:
            value: bytes = found[-1] if last else found[0]
            return value.decode("utf-8", "replace")
    return None


def _skim(head: bytes, tail: bytes, tools: _ToolScan | None = None) -> dict[str, Any]:
    """Top-level fields of a body too large to parse, from its head and tail only."""
    found: dict[str, Any] = {}
    text = tail.decode("utf-8", "replace")
    matches = list(_USAGE_RE.finditer(text))
    if matches:
        try:
            usage, _ = json.JSONDecoder().raw_decode(text, matches[-1].end() - 1)
        except ValueError:
            usage = None
        if isinstance(usage, dict):
            found["usage"] = usage
    for key, value in (
        ("model", _first(_MODEL_RE, tail, head, last=True)),
        ("service_tier", _first(_TIER_RE, tail, head, last=True)),
        ("id", _first(_ID_RE, head)),
        ("status", _first(_STATUS_RE, head)),
    ):
        if value is not None:
            found[key] = value
    if tools is not None:
        items = tools.items()
        if items:
            found["output"] = items
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
        "_invalid",
        "_model",
        "_response_id",
        "_retained",
        "_tier",
        "_usage",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._invalid = False
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
                try:
                    self._usage = completion_usage(usage)
                except InvalidUsage:
                    self._invalid = True
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
        reason = _stream_reason(complete, self._decoder, self._invalid, self._error)
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
        "_invalid",
        "_retained",
        "_terminal",
        "_tools",
    )

    def __init__(
        self,
        *,
        dedupe: bool,
        fallback_model: str | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._invalid = False
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
                try:
                    self._terminal = response_observation(
                        response,
                        dedupe=self._dedupe,
                        tools=self._tools,
                        fallback_model=self._fallback_model,
                    )
                except InvalidUsage:
                    self._invalid = True
                    self._header = response  # for its model, tier and id
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
            reason = _stream_reason(complete, self._decoder, self._invalid, self._error)
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

    __slots__ = ("_decoder", "_invalid", "_model", "_usage")

    def __init__(
        self, *, model: str | None, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._invalid = False
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
            try:
                self._usage = usage_for_shape(usage)
            except InvalidUsage:
                self._invalid = True

    def finish(self, *, complete: bool) -> Observation:
        for event in self._decoder.finish():
            self._event(event)
        if self._usage is not None:
            return Observation(usage=self._usage, source="reported", model=self._model)
        return Observation(
            usage=None,
            source="none",
            model=self._model,
            estimate_reason=_stream_reason(complete, self._decoder, self._invalid, False),
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
