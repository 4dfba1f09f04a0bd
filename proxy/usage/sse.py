"""An incremental Server-Sent Events decoder (pure, no I/O), linear in the bytes it is fed.

Follows the WHATWG "event stream interpretation" rules: lines end with LF, CR or CRLF (a CR at the
end of one chunk and an LF at the start of the next are one line end); ``data:`` lines accumulate
(joined with ``\\n``); ``event:`` sets the type; lines starting with ``:`` are comments; a blank
line dispatches. Input may be split anywhere, including inside a line or a UTF-8 character: the
decoder works on bytes and only joins complete lines, so multi-byte characters are never cut.

Cost: every byte is searched for a line end once and copied at most twice (kept, then joined into
its line), whatever the chunking: an unfinished line is kept as a list of pieces, never re-joined or
rescanned per chunk. Memory: a line or event larger than ``max_event_bytes`` is not kept: its bytes
are dropped as they arrive, the event is not dispatched, and ``oversized`` turns True (a tap then
says the call could not be metered from the stream: ``estimate_reason = oversized_event``).

Event data stays ``bytes`` on purpose: taps scan it for the usage-bearing event with ``in`` and
JSON-decode only the few events that matter (orjson parses bytes directly).
"""

from __future__ import annotations

from typing import Final, NamedTuple

# The default bound on one line / one event's data (``metering.max_event_bytes``). The largest
# legitimate events are image streams' ``partial_image`` / ``completed`` events and Responses'
# ``response.completed`` carrying base64 images: a few MB each.
DEFAULT_MAX_EVENT_BYTES: Final = 16 * 1024 * 1024


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

    __slots__ = (
        "_data",
        "_data_size",
        "_event",
        "_has_data",
        "_id",
        "_max",
        "_pending",
        "_pending_size",
        "_poisoned",
        "_skip_lf",
        "_skipping",
        "oversized",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._pending: list[bytes] = []  # pieces of the unfinished last line
        self._pending_size = 0
        self._skipping = False  # the unfinished line is oversized: drop bytes up to its end
        self._skip_lf = False  # the previous chunk ended with CR: drop one leading LF
        self._data: list[bytes] = []
        self._data_size = 0
        self._has_data = False
        self._poisoned = False  # the current event went over the bound: never dispatch it
        self._event = b""
        self._id: bytes | None = None
        self.oversized = False  # some line or event was over ``max_event_bytes`` (sticky)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if (
            not self._pending
            and not self._skip_lf
            and not self._skipping
            and not self._has_data
            and not self._event
            and not self._poisoned
            and chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and len(chunk) <= self._max
        ):
            # Fastest path (one OpenAI chunk = one whole one-line ``data:`` event, no CR).
            data = chunk[6:-2]
            if b"\n" not in data and b"\r" not in data:
                return [_new_event(SSEEvent, (data, b"", self._id))]
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            # Normalise CRLF and CR to LF, in this chunk only. A trailing CR may be the first half
            # of a CRLF split across chunks: it is a line end now, and a following LF is dropped.
            if chunk[-1:] == b"\r":
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._keep(chunk)
            return []
        events: list[SSEEvent] = []
        start = 0
        if self._skipping or self._pending:
            first = chunk.find(b"\n")
            if self._skipping:
                self._skipping = False
            else:
                head = chunk[:first]
                if self._pending_size + len(head) > self._max:
                    self._poison()
                else:
                    self._pending.append(head)
                    self._line(b"".join(self._pending), events)
            self._pending = []
            self._pending_size = 0
            start = first + 1
        if start <= cut:
            self._lines(chunk[start:cut], events)
        if cut + 1 < len(chunk):
            self._keep(chunk[cut + 1 :])  # after the complete lines: keeping may poison an event
        return events

    def _lines(self, lines: bytes, events: list[SSEEvent]) -> None:
        """Complete lines (LF-separated, without the last line end)."""
        if (
            not self._has_data
            and not self._event
            and not self._poisoned
            and lines[-1:] == b"\n"
            and len(lines) <= self._max
        ):
            # Fast path (OpenAI chat streams): whole events of one ``data:`` line each.
            for block in lines[:-1].split(b"\n\n"):
                if block[:6] == b"data: " and b"\n" not in block:
                    events.append(SSEEvent(block[6:], b"", self._id))
                else:
                    for line in block.split(b"\n"):
                        self._line(line, events)
                    self._line(b"", events)
            return
        for line in lines.split(b"\n"):
            self._line(line, events)

    def finish(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._pending:
            self._line(b"".join(self._pending), events)
        self._pending = []
        self._pending_size = 0
        self._skipping = False
        self._line(b"", events)
        return events

    def _keep(self, piece: bytes) -> None:
        """Keep the start of an unfinished line, unless it is over the bound."""
        if self._skipping:
            return
        self._pending_size += len(piece)
        if self._pending_size > self._max:
            self._pending = []
            self._pending_size = 0
            self._skipping = True
            self._poison()
            return
        self._pending.append(piece)

    def _poison(self) -> None:
        self.oversized = True
        self._poisoned = True
        self._data = []
        self._data_size = 0

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data and not self._poisoned:
                events.append(SSEEvent(b"\n".join(self._data), self._event, self._id))
            self._data = []
            self._data_size = 0
            self._has_data = False
            self._poisoned = False
            self._event = b""
            return
        if len(line) > self._max:
            self._poison()
            self._has_data = True  # the event had data: its blank line ends it
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
            self._has_data = True
            if self._poisoned:
                return
            self._data_size += len(value) + 1 if self._data else len(value)
            if self._data_size > self._max:
                self._poison()
                return
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id" and b"\0" not in value:
            self._id = value
        # ``retry`` and unknown fields are ignored, as the spec says.
