"""Upstreams usually send one whole SSE event per chunk: the decoder, the usage-chunk stripper and
the chat tap take a fast path for exactly that shape. These tests pin that the fast path gives the
same events, bytes and observation as one whole feed, also when aligned chunks are mixed with
arbitrary cuts (the fast path must hand over to the general one and back), with CRLF line ends,
with multi-line events, and with a cut right after a CR.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.observation import Observation
from proxy.usage import taps
from proxy.usage.rewrite import UsageChunkStripper
from proxy.usage.sse import SSEDecoder, SSEEvent
from proxy.usage.taps import ChatStreamTap
from tests.support.usage_data import chunked, cuts, raw

CHAT_STREAMS = [
    "chat_stream_include_usage.sse",
    "chat_stream_plain.sse",
    "chat_stream_reasoning_usage.sse",
    "chat_stream_tools_no_usage.sse",
    "chat_stream_error.sse",
    "chat_stream_cut.sse",
    "completions_stream_include_usage.sse",
]


def events_of(data: bytes) -> list[bytes]:
    """The stream as upstream chunks: one whole event (with its blank line) per chunk."""
    parts = data.split(b"\n\n")
    pieces = [part + b"\n\n" for part in parts[:-1]]
    if parts[-1]:
        pieces.append(parts[-1])
    return pieces


def decode(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    found: list[SSEEvent] = []
    for piece in pieces:
        found.extend(decoder.feed(piece))
    return found + decoder.finish()


def strip(pieces: list[bytes]) -> bytes:
    stripper = UsageChunkStripper()
    return b"".join(stripper.feed(p) for p in pieces) + stripper.flush()


def observe(pieces: list[bytes]) -> Observation:
    tap = ChatStreamTap()
    for piece in pieces:
        tap.feed(piece)
    return tap.finish(complete=True)


def mixed(data: bytes, positions: list[int], aligned_from: int) -> list[bytes]:
    """Arbitrary cuts before byte ``aligned_from``, event-aligned chunks after the next event."""
    at = data.find(b"\n\n", aligned_from % (len(data) or 1))
    if at < 0:
        return chunked(data, positions)
    head, tail = data[: at + 2], data[at + 2 :]
    return chunked(head, positions) + events_of(tail)


def test_aligned_chunks_equal_one_whole_feed() -> None:
    for name in CHAT_STREAMS:
        data = raw(name)
        pieces = events_of(data)
        assert len(pieces) > 3, name
        assert decode(pieces) == decode([data]), name
        assert strip(pieces) == strip([data]), name
        assert observe(pieces) == observe([data]), name


def test_aligned_usage_chunk_is_stripped_and_read() -> None:
    data = raw("chat_stream_include_usage.sse")
    pieces = events_of(data)
    out = strip(pieces)
    assert b'"choices":[]' not in out
    assert out.count(b"data: ") == data.count(b"data: ") - 1
    obs = observe(pieces)
    assert obs.source == "reported"
    assert obs.usage is not None and obs.usage.input_tokens > 0


def test_multiline_and_typed_events_leave_the_fast_path_correctly() -> None:
    pieces = [
        b'data: {"a":1}\n\n',
        b'event: x\ndata: {"b":2}\n\n',
        b'data: {"c":\ndata: 3}\n\n',
        b'data: {"d":4}\n\n',
        b"data: tail-without-blank-line",
    ]
    assert decode(pieces) == [
        SSEEvent(b'{"a":1}'),
        SSEEvent(b'{"b":2}', b"x"),
        SSEEvent(b'{"c":\n3}'),
        SSEEvent(b'{"d":4}'),
        SSEEvent(b"tail-without-blank-line"),
    ]


def test_an_aligned_chunk_after_a_trailing_cr_is_not_a_whole_event() -> None:
    # "...\r" then "\ndata: ...\n\n": the LF completes the CRLF, it is not an empty line.
    pieces = [b'data: {"a":1}\r', b'\ndata: {"b":2}\n\n']
    assert decode(pieces) == [SSEEvent(b'{"a":1}\n{"b":2}')]


def test_cr_inside_an_aligned_chunk_splits_lines() -> None:
    assert decode([b'data: {"a":\r1}\n\n']) == [SSEEvent(b'{"a":')]


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(CHAT_STREAMS),
    positions=cuts(),
    aligned_from=st.integers(min_value=0, max_value=20_000),
    crlf=st.booleans(),
)
def test_cut_then_aligned_equals_whole(
    name: str, positions: list[int], aligned_from: int, crlf: bool
) -> None:
    data = raw(name)
    pieces = mixed(data, positions, aligned_from)
    if crlf:
        pieces = [piece.replace(b"\n", b"\r\n") for piece in pieces]
        data = data.replace(b"\n", b"\r\n")
    assert b"".join(pieces) == data
    assert decode(pieces) == decode([data])
    assert strip(pieces) == strip([data])
    assert observe(pieces) == observe([data])


def test_retention_cap_still_scales_the_estimate_text(monkeypatch: pytest.MonkeyPatch) -> None:
    data = raw("chat_stream_tools_no_usage.sse")
    pieces = events_of(data)
    full = observe(pieces).output_text
    deltas = [piece for piece in pieces if b'"delta"' in piece]
    # Keep roughly the first third of the delta payloads; the rest is counted, not kept.
    cap = sum(len(piece) for piece in deltas[: max(1, len(deltas) // 3)])
    monkeypatch.setattr(taps, "MAX_RETAINED_BYTES", cap)
    capped = observe(pieces).output_text
    assert capped != full
    # Scaled by events seen / events kept: about as long as the full text, not a third of it.
    assert len(capped) >= len(full) * 0.6
