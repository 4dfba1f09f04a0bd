from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.usage.sse import SSEDecoder, SSEEvent
from tests.support.usage_data import bytewise, chunked, cuts, raw

TRANSCRIPTS = [
    "chat_stream_plain.sse",
    "chat_stream_include_usage.sse",
    "chat_stream_reasoning_usage.sse",
    "responses_stream_completed.sse",
    "completions_stream_include_usage.sse",
]


def decode(pieces: list[bytes], max_event_bytes: int | None = None) -> list[SSEEvent]:
    decoder = (
        SSEDecoder() if max_event_bytes is None else SSEDecoder(max_event_bytes=max_event_bytes)
    )
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events + decoder.finish()


def test_lf_event_with_type_and_comment() -> None:
    stream = b': keep-alive\n\nevent: response.created\ndata: {"a":1}\n\ndata: [DONE]\n\n'
    assert decode([stream]) == [
        SSEEvent(data=b'{"a":1}', event=b"response.created"),
        SSEEvent(data=b"[DONE]"),
    ]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_gives_the_same_events(eol: bytes) -> None:
    stream = eol.join([b"event: x", b"data: one", b"data: two", b"", b"data:three", b"", b""])
    assert decode([stream]) == [
        SSEEvent(data=b"one\ntwo", event=b"x"),
        SSEEvent(data=b"three"),
    ]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # "\r" ends chunk one, "\n" starts chunk two: one line end, not a blank line.
    assert decode([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [SSEEvent(data=b"a\nb")]


def test_event_type_resets_after_dispatch_and_id_is_kept() -> None:
    events = decode([b"id: 7\nevent: e\ndata: 1\n\ndata: 2\n\n"])
    assert events == [SSEEvent(b"1", b"e", b"7"), SSEEvent(b"2", b"", b"7")]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode([b"event: ping\n\n: comment only\n\n"]) == []


def test_unterminated_last_event_is_delivered_on_finish() -> None:
    assert decode([b'data: {"usage":{"prompt_tokens":1}}']) == [
        SSEEvent(data=b'{"usage":{"prompt_tokens":1}}')
    ]


def test_utf8_character_split_across_chunks_survives() -> None:
    data = "data: 日本語 🙂\n\n".encode()
    assert [e.data.decode() for e in decode(bytewise(data))] == ["日本語 🙂"]


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcript_bytewise_equals_whole(name: str) -> None:
    data = raw(name)
    assert decode(bytewise(data)) == decode([data])
    assert len(decode([data])) == data.count(b"\n\n")


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(TRANSCRIPTS),
    positions=cuts(),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_split_equals_whole(name: str, positions: list[int], eol: bytes) -> None:
    data = raw(name).replace(b"\n", eol)
    assert decode(chunked(data, positions)) == decode([data])


# --- bounds: an oversized line or event is dropped as it arrives, the rest still decodes ----------

_SMALL = b'data: {"a":1}\n\n'
_BIG_LINE = b"data: " + b"x" * 5000 + b"\n\n"
_MANY_LINES = b"".join(b"data: " + b"y" * 900 + b"\n" for _ in range(8)) + b"\n"  # 7.2 KB event
_TYPED = b'event: response.completed\ndata: {"b":2}\n\n'
_OVERSIZE_STREAM = _SMALL + _BIG_LINE + _TYPED + _MANY_LINES + _SMALL


def _decoded_with_flag(pieces: list[bytes], bound: int) -> tuple[list[SSEEvent], bool]:
    decoder = SSEDecoder(max_event_bytes=bound)
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events + decoder.finish(), decoder.oversized


@settings(max_examples=150, deadline=None)
@given(positions=cuts(), crlf=st.booleans())
def test_oversized_events_are_dropped_whatever_the_split(positions: list[int], crlf: bool) -> None:
    data = _OVERSIZE_STREAM.replace(b"\n", b"\r\n") if crlf else _OVERSIZE_STREAM
    events, oversized = _decoded_with_flag(chunked(data, positions), 4096)
    assert oversized
    assert events == [
        SSEEvent(b'{"a":1}'),
        SSEEvent(b'{"b":2}', b"response.completed"),
        SSEEvent(b'{"a":1}'),
    ]
    # with a bound above every event nothing is dropped and nothing is flagged
    events, oversized = _decoded_with_flag(chunked(data, positions), 1 << 20)
    assert not oversized and len(events) == 5


def test_events_at_the_bound_are_kept() -> None:
    line = b"data: " + b"z" * 100 + b"\n\n"  # a 106-byte line
    for pieces in (bytewise(line), [line], [line[:50], line[50:]]):
        events, oversized = _decoded_with_flag(pieces, 106)
        assert events == [SSEEvent(b"z" * 100)] and not oversized
        events, oversized = _decoded_with_flag(pieces, 105)
        assert events == [] and oversized


def test_a_50_mb_line_without_newline_keeps_bounded_state() -> None:
    decoder = SSEDecoder(max_event_bytes=1 << 20)
    piece = b"q" * 65536
    assert decoder.feed(b"data: ") == []
    for _ in range(800):
        assert decoder.feed(piece) == []
        assert sum(map(len, decoder._pending)) <= 1 << 20
    assert decoder.oversized
    # the stream goes on normally after the giant line ends
    assert decoder.feed(b"\n\n" + _SMALL) == [SSEEvent(b'{"a":1}')]
    assert decoder.finish() == []


def test_the_fast_path_bytes_are_bounded_too() -> None:
    # a whole one-line event in one chunk (the fastest path) is still checked against the bound
    assert _decoded_with_flag([_BIG_LINE], 4096) == ([], True)
    assert _decoded_with_flag([_SMALL + _BIG_LINE], 4096) == ([SSEEvent(b'{"a":1}')], True)
