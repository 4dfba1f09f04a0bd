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


# Two line ends in a row. A CR followed by LF is ONE line end (CRLF), never "CR, then LF": without
# the lookahead the regex backtracks and reads a lone CRLF at a chunk's end as an event end.
_EVENT_END: Final = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_NOT_USAGE_MARKERS: Final = (b'"choices":[{', b'"usage":null', b"[DONE]")
_MARKER_OVERLAP: Final = max(map(len, _NOT_USAGE_MARKERS)) - 1
# The usage-only chunk is small (~600 bytes with every detail field and an obfuscation pad): an
# event whose start is already longer than this cannot be it, and is released, never held.
MAX_HELD_BYTES: Final = 8 * 1024
# The field upstream adds to every chunk once ``include_usage`` is on (OpenAI's compact JSON puts
# it after ``choices``): removed from the chunks of streams whose client did not ask for usage.
_NULL_USAGE: Final = b',"usage":null'
_NULL_USAGE_RE: Final = re.compile(rb',"usage":null(?=[,}])')


def is_usage_only_event(raw: bytes) -> bool:
    """True for a complete raw SSE event that is the injected usage-only chunk."""
    if len(raw) > MAX_HELD_BYTES or b'"usage":null' in raw or b'"choices":[{' in raw:
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


class _NullUsageRemover:
    """Removes ``,"usage":null`` from a byte stream, holding back at most the few bytes that may
    be the start of one (so the end of every event still goes out at once)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        at = data.find(_NULL_USAGE)
        if at >= 0:
            end = at + len(_NULL_USAGE)
            if data.find(_NULL_USAGE, end) < 0:  # one per event, one event per chunk: the usual
                if data[end : end + 1] in (b"}", b","):
                    data = data[:at] + data[end:]
            else:
                data = _NULL_USAGE_RE.sub(b"", data)
        # Hold a suffix that may still become ``,"usage":null`` + ``,`` or ``}``.
        comma = data.rfind(b",", max(0, len(data) - len(_NULL_USAGE)))
        if comma >= 0 and _NULL_USAGE.startswith(data[comma:]):
            self._pending = data[comma:]
            return data[:comma]
        return data

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending


class UsageChunkStripper:
    """A ``StreamRewriter`` for streams whose usage the proxy asked for: drops the usage-only
    chunk, removes the ``"usage":null`` upstream then adds to every other chunk, and passes every
    other byte through unchanged, as it arrives.

    Linear in the bytes fed: each byte is searched for an event end once (a boundary check looks
    at the last 3 bytes before a chunk and the first 3 of it), and the start of an event is held
    back only while it could still be the usage chunk and is under ``MAX_HELD_BYTES``.
    """

    __slots__ = ("_context", "_dropped", "_held", "_nulls", "_passing")

    def __init__(self) -> None:
        self._held = b""  # the start of an event that might be the usage chunk
        self._passing = False  # inside an event already released to the client
        self._context = b""  # the current event's last 3 bytes seen (to find its end)
        self._dropped = False
        self._nulls = _NullUsageRemover()

    @property
    def dropped(self) -> bool:
        return self._dropped

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        out = self._strip(chunk)
        if out[-1:] == b"\n" and not self._nulls.pending:
            # The usual chunk (whole events, one null field each): the remover's work, inline.
            at = out.find(_NULL_USAGE)
            if at < 0:
                return out
            end = at + len(_NULL_USAGE)
            if out[end : end + 1] in (b"}", b",") and out.find(_NULL_USAGE, end) < 0:
                return out[:at] + out[end:]
        return self._nulls.feed(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        if held and not self._dropped and is_usage_only_event(held):
            self._dropped = True
            held = b""
        return self._nulls.feed(held) + self._nulls.flush()

    def _strip(self, chunk: bytes) -> bytes:
        if self._dropped:
            return chunk  # only one usage chunk per stream: the rest passes untouched
        if (
            not self._held
            and not self._passing
            and chunk[-2:] == b"\n\n"
            and chunk.find(b"\n") == len(chunk) - 2
            and b"\r" not in chunk
        ):
            # Fast path: the chunk is exactly one whole one-line event (LF, the usual framing).
            # is_usage_only_event's cheap refusals first, without a call (almost every event).
            if b'"choices":[{' in chunk or b'"usage"' not in chunk or b'"usage":null' in chunk:
                return chunk
            if is_usage_only_event(chunk):
                self._dropped = True
                return b""
            return chunk
        out: list[bytes] = []
        pos = 0
        size = len(chunk)
        lf_only = b"\r" not in chunk
        while pos < size:
            if self._dropped:
                out.append(chunk[pos:])
                break
            if lf_only and not self._held and not self._passing:
                # At an event start: every complete event up to the chunk's last one at once,
                # unless one of them could be the usage chunk (a non-null "usage").
                last = _last_event_end(chunk, pos)
                if last > pos:
                    region = chunk[pos:last]
                    if region.count(b'"usage"') == region.count(b'"usage":null'):
                        out.append(region)
                        pos = last
                        self._context = b""
                        continue
            end = self._event_end(chunk, pos, lf_only)
            if end < 0:  # the event goes on in the next chunk
                piece = chunk[pos:] if pos else chunk
                self._context = (self._context + chunk[max(pos, size - 3) :])[-3:]
                if self._passing:
                    out.append(piece)
                elif len(self._held) + len(piece) > MAX_HELD_BYTES or _not_usage(
                    self._held[-_MARKER_OVERLAP:] + piece
                ):
                    out.append(self._held + piece if self._held else piece)
                    self._held = b""
                    self._passing = True
                else:
                    self._held += piece
                break
            piece = chunk[pos:end]
            if self._passing:
                out.append(piece)
            else:
                event = self._held + piece if self._held else piece
                self._held = b""
                if is_usage_only_event(event):
                    self._dropped = True
                else:
                    out.append(event)
            self._passing = False
            self._context = b""
            pos = end
        return b"".join(out)

    def _event_end(self, chunk: bytes, pos: int, lf_only: bool) -> int:
        """Where the current event ends in ``chunk`` (searching from ``pos``), or -1."""
        context = self._context if pos == 0 else b""
        if context:
            # An end that starts in the previous chunk (at most 3 bytes of it) and ends in this one.
            probe = context + chunk[:3]
            for match in _EVENT_END.finditer(probe):
                # Ending right at the boundary: an end deferred for a trailing CR that was not
                # half of a CRLF after all (the event ends where this chunk starts).
                if match.end() >= len(context):
                    end = match.end() - len(context)
                    if chunk[end - 1 : end] == b"\r" and chunk[end : end + 1] == b"\n":
                        end += 1  # the probe cut a CRLF: its CR only looked like a lone CR
                    return _unless_half_crlf(chunk, end)
        if lf_only:  # the usual framing: memchr speed (the regex is ~30x slower on long lines)
            return _first_event_end(chunk, pos)
        found = _EVENT_END.search(chunk, pos)
        return -1 if found is None else _unless_half_crlf(chunk, found.end())


# Newline searches go byte by byte (memchr): CPython's multi-byte ``find`` is 10-100x slower on
# long lines (a 64 KiB line: ~90-130 us for b"\n\n" against ~1-15 us for b"\n").


def _first_event_end(chunk: bytes, pos: int) -> int:
    """The end of the first LF-LF in ``chunk[pos:]`` (LF-only framing), or -1."""
    at = chunk.find(b"\n", pos)
    while at >= 0:
        if chunk[at + 1 : at + 2] == b"\n":
            return at + 2
        at = chunk.find(b"\n", at + 1)
    return -1


def _last_event_end(chunk: bytes, pos: int) -> int:
    """The last event end in ``chunk[pos:]`` for a left-to-right reading from ``pos`` (LF-only),
    or -1. After a line, a run of k line ends closes its event and then k-2 empty ones, pairwise:
    the last end is at ``run start + 2 * (k // 2)``."""
    at = chunk.rfind(b"\n", pos)
    while at > pos:
        if chunk[at - 1] == 0x0A:  # ``at`` ends a run of at least two
            start = at - 1
            while start > pos and chunk[start - 1] == 0x0A:
                start -= 1
            return start + 2 * ((at + 1 - start) // 2)
        at = chunk.rfind(b"\n", pos, at)
    return -1


def _unless_half_crlf(chunk: bytes, end: int) -> int:
    # An end that is the chunk's last byte and a CR may be the first half of a CRLF: decide with
    # the next chunk (the CR stays in the context).
    return -1 if end == len(chunk) and chunk[-1:] == b"\r" else end


def _not_usage(data: bytes) -> bool:
    return b'"choices":[{' in data or b'"usage":null' in data or b"[DONE]" in data
