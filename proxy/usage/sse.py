"""An incremental Server-Sent Events decoder (pure, no I/O).

Follows the WHATWG "event stream interpretation" rules: lines end with LF, CR or CRLF (a CR at the
end of one chunk and an LF at the start of the next are one line end); ``data:`` lines accumulate
(joined with ``\\n``); ``event:`` sets the type; lines starting with ``:`` are comments; a blank
line dispatches. Input may be split anywhere, including inside a line or a UTF-8 character: the
decoder works on bytes and only joins complete lines, so multi-byte characters are never cut.

Event data stays ``bytes`` on purpose: taps scan it for the usage-bearing event with ``in`` and
JSON-decode only the few events that matter (orjson parses bytes directly).
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):  # a tuple: cheapest to build on the hot path
    data: bytes
    event: bytes = b""  # the ``event:`` field, empty when absent ("message")
    id: bytes | None = None


# ``SSEEvent(...)`` goes through a Python-level ``__new__``; the fast path builds the tuple directly.
_new_event = tuple.__new__


class SSEDecoder:
    """``feed(chunk) -> [events]``; ``finish() -> [events]`` at end of stream.

    ``finish`` is lenient: a last event whose terminating blank line never arrived is still
    dispatched (for metering, a complete ``data:`` line beats nothing; a truncated JSON payload
    simply fails to parse later).
    """

    __slots__ = ("_buf", "_data", "_event", "_has_data", "_id", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._skip_lf = False  # the previous chunk ended with CR: drop one leading LF
        self._data: list[bytes] = []
        self._has_data = False
        self._event = b""
        self._id: bytes | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if (
            not self._buf
            and not self._skip_lf
            and not self._has_data
            and not self._event
            and chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
        ):
            # Fastest path (one OpenAI chunk = one whole one-line ``data:`` event, no CR).
            data = chunk[6:-2]
            if b"\n" not in data and b"\r" not in data:
                return [_new_event(SSEEvent, (data, b"", self._id))]
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # Normalise CRLF and CR to LF. A trailing CR may be the first half of a CRLF split
            # across chunks: treat it as a line end now and swallow a following LF.
            if buf[-1:] == b"\r":
                self._skip_lf = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._buf = buf
            return []
        self._buf = buf[cut + 1 :]
        events: list[SSEEvent] = []
        lines = buf[:cut]
        if not self._has_data and not self._event and lines[-1:] == b"\n":
            # Fast path (OpenAI chat streams): whole events of one ``data:`` line each.
            for block in lines[:-1].split(b"\n\n"):
                if block[:6] == b"data: " and b"\n" not in block:
                    events.append(SSEEvent(block[6:], b"", self._id))
                else:
                    for line in block.split(b"\n"):
                        self._line(line, events)
                    self._line(b"", events)
            return events
        for line in lines.split(b"\n"):
            self._line(line, events)
        return events

    def finish(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf, events)
            self._buf = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                events.append(SSEEvent(b"\n".join(self._data), self._event, self._id))
            self._data = []
            self._has_data = False
            self._event = b""
            return
        colon = line.find(b":")
        if colon == 0:
            return  # comment
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value
        elif name == b"id" and b"\0" not in value:
            self._id = value
        # ``retry`` and unknown fields are ignored, as the spec says.
