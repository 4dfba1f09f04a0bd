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


def decode(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
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
@given(name=st.sampled_from(TRANSCRIPTS), positions=cuts(), crlf=st.booleans())
def test_any_split_equals_whole(name: str, positions: list[int], crlf: bool) -> None:
    data = raw(name)
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    assert decode(chunked(data, positions)) == decode([data])
