"""Exact streamed usage: ask upstream for it, hide it from clients that did not ask (pure).

``inject_include_usage`` adds ``stream_options.include_usage: true`` to a chat / legacy completions
stream request. ``UsageChunkStripper`` then removes the one usage-only chunk (``"choices": []`` with
a non-null ``usage``) from what the client receives. Every other byte passes through unchanged, as
soon as it arrives: complete events are forwarded immediately, and an incomplete trailing event is
forwarded as soon as its bytes show it cannot be the usage chunk (it has a non-empty ``choices``
or a null ``usage``). Only a fragment that might still become the usage chunk is held back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from proxy.usage.sse import SSEDecoder

_INJECTED: Final = b'"stream_options":{"include_usage":true},'


def wants_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def needs_injection(request: Mapping[str, Any]) -> bool:
    return request.get("stream") is True and not wants_usage(request)


def inject_include_usage(body: bytes, request: Mapping[str, Any]) -> bytes:
    """The upstream body with ``include_usage`` on; the client's bytes are kept where possible.

    Without ``stream_options`` the key is spliced in right after the opening brace (no
    re-serialisation, no reordering); with ``stream_options`` present the body is re-encoded.
    """
    if "stream_options" not in request:
        start = body.find(b"{")
        if start >= 0 and body[:start].strip() == b"":
            return body[: start + 1] + _INJECTED + body[start + 1 :]
    patched = dict(request)
    options = request.get("stream_options")
    patched["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return orjson.dumps(patched)


# Two consecutive line ends close an event (LF, CR or CRLF, mixed).
# Two line ends in a row. A CR followed by LF is ONE line end (CRLF), never "CR, then LF": without
# the lookahead the regex backtracks and reads a lone CRLF at a chunk's end as an event end.
_EVENT_END: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_NOT_USAGE_MARKERS: Final = (b'"choices":[{', b'"usage":null', b"[DONE]")


def is_usage_only_event(raw: bytes) -> bool:
    """True for a complete raw SSE event that is the injected usage-only chunk."""
    if b'"usage":null' in raw or b'"choices":[{' in raw:
        return False  # the common case, decided without parsing (JSON strings escape quotes)
    if b'"choices"' not in raw or b'"usage"' not in raw:
        return False
    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.finish()
    if len(events) != 1:
        return False
    try:
        obj = orjson.loads(events[0].data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def _lf_event_ends(data: bytes) -> list[int]:
    ends: list[int] = []
    pos = data.find(b"\n\n")
    while pos >= 0:
        ends.append(pos + 2)
        pos = data.find(b"\n\n", pos + 2)
    return ends


class UsageChunkStripper:
    """A ``StreamRewriter`` that drops the usage-only chunk and passes everything else through."""

    __slots__ = ("_context", "_dropped", "_held", "_passing")

    def __init__(self) -> None:
        self._held = b""  # the start of an event that might be the usage chunk
        self._passing = False  # inside an event already released to the client
        self._context = b""  # last bytes released while ``_passing`` (to find its end)
        self._dropped = False

    @property
    def dropped(self) -> bool:
        return self._dropped

    def feed(self, chunk: bytes) -> bytes:
        if self._dropped or not chunk:
            return chunk  # only one usage chunk per stream: the rest passes untouched
        if self._passing:
            # The current event was already released: forward up to its end unchanged.
            context = self._context
            data = context + chunk
            end = -1
            for match in _EVENT_END.finditer(data):
                if match.end() >= len(context):
                    end = match.end()
                    break
            if end < 0:
                self._context = data[-3:]
                return chunk
            self._passing = False
            self._context = b""
            return data[len(context) : end] + self._events(data[end:])
        if (
            not self._held
            and chunk[-2:] == b"\n\n"
            and chunk.find(b"\n\n") == len(chunk) - 2
            and b"\r" not in chunk
        ):
            # Fast path: the chunk is exactly one whole event (LF line ends, the usual framing).
            # is_usage_only_event's cheap refusals first, without a call (almost every event).
            if b'"choices":[{' in chunk or b'"usage"' not in chunk or b'"usage":null' in chunk:
                return chunk
            if is_usage_only_event(chunk):
                self._dropped = True
                return b""
            return chunk
        data = self._held + chunk if self._held else chunk
        self._held = b""
        return self._events(data)

    def _events(self, data: bytes) -> bytes:
        if b"\r" not in data:
            ends = _lf_event_ends(data)
        else:
            ends = [m.end() for m in _EVENT_END.finditer(data)]
            if ends and ends[-1] == len(data) and data[-1:] == b"\r":
                ends.pop()  # the CR may be half of a CRLF; decide with the next chunk
        start = 0
        dropped_at = -1
        if not self._dropped:
            for end in ends:
                if is_usage_only_event(data[start:end]):
                    self._dropped = True
                    dropped_at = start
                    break
                start = end
        last = ends[-1] if ends else 0
        if dropped_at >= 0:
            # Everything but the usage event, which ends at the next boundary.
            after = next(end for end in ends if end > dropped_at)
            head = data[:dropped_at] + data[after:last]
        else:
            head = data[:last]
        tail = data[last:]
        if not tail:
            return head
        if self._dropped or any(marker in tail for marker in _NOT_USAGE_MARKERS):
            if not self._dropped:
                self._passing = True
                self._context = tail[-3:]
            return head + tail
        self._held = tail
        return head

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        if held and not self._dropped and is_usage_only_event(held):
            self._dropped = True
            return b""
        return held
