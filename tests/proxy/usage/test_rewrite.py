from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.usage.rewrite import (
    MAX_HELD_BYTES,
    UsageChunkStripper,
    _first_event_end,
    _last_event_end,
    inject_include_usage,
    is_usage_only_event,
    needs_injection,
)
from proxy.usage.sse import SSEDecoder
from tests.support.usage_data import bytewise, chunked, cuts, raw


def strip(pieces: list[bytes]) -> bytes:
    stripper = UsageChunkStripper()
    return b"".join(stripper.feed(p) for p in pieces) + stripper.flush()


def events(data: bytes) -> list[object]:
    decoder = SSEDecoder()
    found = decoder.feed(data) + decoder.finish()
    out: list[object] = []
    for event in found:
        if event.data == b"[DONE]":
            out.append("[DONE]")
            continue
        obj = orjson.loads(event.data)
        obj.pop("usage", None)  # the injected ``"usage":null`` key is the only other change
        out.append(obj)
    return out


# --- request side ---------------------------------------------------------------------------


def test_injection_splices_the_flag_and_keeps_the_clients_bytes() -> None:
    body = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    request = orjson.loads(body)
    assert needs_injection(request)
    out = inject_include_usage(body, request)
    assert out == b'{"stream_options":{"include_usage":true},' + body[1:]
    assert orjson.loads(out) == {**request, "stream_options": {"include_usage": True}}


def test_injection_keeps_other_stream_options() -> None:
    request = {"model": "m", "stream": True, "stream_options": {"include_obfuscation": False}}
    out = orjson.loads(inject_include_usage(orjson.dumps(request), request))
    assert out["stream_options"] == {"include_obfuscation": False, "include_usage": True}


@pytest.mark.parametrize(
    "request_json",
    [
        {"model": "m", "stream": True, "stream_options": {"include_usage": True}},
        {"model": "m", "stream": False},
        {"model": "m"},
    ],
)
def test_no_injection_when_client_asked_or_not_streaming(request_json: dict[str, object]) -> None:
    assert not needs_injection(request_json)


# --- response side --------------------------------------------------------------------------


def test_stripped_stream_is_what_the_client_would_have_received() -> None:
    injected = raw("chat_stream_include_usage.sse")
    out = strip([injected])
    assert events(out) == events(raw("chat_stream_plain.sse"))
    # byte for byte: the usage chunk and the ``"usage":null`` upstream added are gone, and nothing
    # else changed (the fixtures are the same stream with and without include_usage)
    assert out == raw("chat_stream_plain.sse")
    usage_event = next(e for e in injected.split(b"\n\n") if b'"choices":[]' in e) + b"\n\n"
    assert out == injected.replace(usage_event, b"").replace(b',"usage":null}', b"}")


def test_legacy_completions_usage_chunk_is_stripped() -> None:
    out = strip([raw("completions_stream_include_usage.sse")])
    assert b'"prompt_tokens"' not in out
    assert len(events(out)) == len(events(raw("completions_stream_include_usage.sse"))) - 1


def test_stream_without_usage_chunk_passes_unchanged() -> None:
    data = raw("chat_stream_plain.sse")
    assert strip(bytewise(data)) == data
    assert strip([data]) == data


def test_only_the_usage_only_event_matches() -> None:
    assert is_usage_only_event(b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n')
    assert not is_usage_only_event(
        b'data: {"choices":[{"index":0}],"usage":{"prompt_tokens":1}}\n\n'
    )
    assert not is_usage_only_event(b'data: {"choices":[],"usage":null}\n\n')


def test_complete_content_events_are_forwarded_immediately() -> None:
    stripper = UsageChunkStripper()
    first = raw("chat_stream_include_usage.sse").split(b"\n\n")[0] + b"\n\n"
    assert stripper.feed(first) == first.replace(b',"usage":null', b"")


def test_a_partial_content_event_is_released_once_it_cannot_be_usage() -> None:
    stripper = UsageChunkStripper()
    event = raw("chat_stream_include_usage.sse").split(b"\n\n")[1] + b"\n\n"
    cut = event.index(b'"choices":[{') + len(b'"choices":[{')
    # before the choices are visible the fragment is held; once visible it goes out at once
    assert stripper.feed(event[:20]) == b""
    assert stripper.feed(event[20:cut]) == event[:cut]
    assert stripper.feed(event[cut:]) == event[cut:].replace(b',"usage":null', b"")


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(
        [
            "chat_stream_include_usage.sse",
            "completions_stream_include_usage.sse",
            "chat_stream_reasoning_usage.sse",
        ]
    ),
    positions=cuts(),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_split_strips_exactly_the_same_bytes(
    name: str, positions: list[int], eol: bytes
) -> None:
    data = raw(name).replace(b"\n", eol)
    whole = strip([data])
    assert strip(chunked(data, positions)) == whole
    assert b'"choices":[]' not in whole
    assert whole.count(b"data: ") == data.count(b"data: ") - 1


def test_bytewise_feed_strips_the_usage_chunk() -> None:
    data = raw("chat_stream_include_usage.sse")
    assert strip(bytewise(data)) == strip([data])


def test_a_crlf_stream_cut_right_after_the_usage_line_loses_no_byte() -> None:
    """Regression: a chunk ending in the usage line's CRLF was taken for the end of the event, so
    the blank line's CRLF from the next chunk reached the client on its own."""
    data = raw("chat_stream_include_usage.sse").replace(b"\n", b"\r\n")
    cut = data.index(b"}}}\r\n") + len(b"}}}\r\n")
    assert strip([data[:cut], data[cut:]]) == strip([data])


# --- "usage": null, bounded hold-back, linear cost ------------------------------------------


@settings(max_examples=120, deadline=None)
@given(positions=cuts(), crlf=st.booleans())
def test_any_split_gives_the_plain_streams_bytes(positions: list[int], crlf: bool) -> None:
    injected, plain = raw("chat_stream_include_usage.sse"), raw("chat_stream_plain.sse")
    if crlf:
        injected, plain = injected.replace(b"\n", b"\r\n"), plain.replace(b"\n", b"\r\n")
    assert strip(chunked(injected, positions)) == plain


def test_usage_null_split_at_every_byte_is_removed() -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}\n\n'
    expected = event.replace(b',"usage":null', b"")
    for cut in range(1, len(event)):
        assert strip([event[:cut], event[cut:]]) == expected, cut


def test_only_the_field_is_removed_never_text_that_looks_like_it() -> None:
    # inside a JSON string the quotes are escaped; a key that is not exactly usage stays too
    event = (
        b'data: {"choices":[{"index":0,"delta":{"content":"\\",\\"usage\\":null"}}],'
        b'"my_usage":null,"usage":null}\n\n'
    )
    assert strip(bytewise(event)) == event.replace(b',"usage":null}', b"}")


def test_the_end_of_an_event_is_not_held_back() -> None:
    stripper = UsageChunkStripper()
    event = raw("chat_stream_include_usage.sse").split(b"\n\n")[1] + b"\n\n"
    cut = event.index(b'"choices":[{') + len(b'"choices":[{')
    assert stripper.feed(event[:cut]) == event[:cut]
    # the rest, up to the blank line, goes out at once (minus the null field)
    assert stripper.feed(event[cut:]) == event[cut:].replace(b',"usage":null', b"")


def test_a_long_fragment_is_released_once_over_the_hold_bound() -> None:
    """An event start without any marker (e.g. pretty-printed JSON) is held only while it is
    small enough to be the usage chunk."""
    stripper = UsageChunkStripper()
    head = b'data: { "choices": [ { "delta": { "content": "'
    assert stripper.feed(head) == b""
    sent = b""
    piece = b"x" * 1000
    for _ in range(20):
        sent += stripper.feed(piece)
        assert len(stripper._held) <= MAX_HELD_BYTES
    assert sent == (head + piece * 20)[: len(sent)]
    assert len(sent) == len(head) + 20_000  # released at the bound, then passed as it came
    assert stripper.feed(b'" } } ] }\n\n') == b'" } } ] }\n\n'


def test_a_50_mb_line_passes_in_pieces_with_bounded_state() -> None:
    stripper = UsageChunkStripper()
    piece = b"a" * 65536
    out = stripper.feed(b"data: {")
    total = 0
    for _ in range(800):  # 52 MB, no newline
        got = stripper.feed(piece)
        total += len(got)
        assert len(stripper._held) <= MAX_HELD_BYTES
        assert len(stripper._context) <= 3
    out += stripper.flush()
    assert total + len(out) == 7 + 800 * 65536


@pytest.mark.parametrize("crlf", [False, True])
def test_a_usage_chunk_is_dropped_after_an_oversized_event(crlf: bool) -> None:
    big = b"data: {" + b"z" * 100_000 + b"}\n\n"
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n'
    data = big + usage + b"data: [DONE]\n\n"
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    expected = data.replace(usage.replace(b"\n", b"\r\n") if crlf else usage, b"")
    assert strip([data]) == expected
    assert strip(chunked(data, list(range(1, len(data), 4097)))) == expected


# --- the newline searches agree with the reference reading, blank-line runs and all ---------------

_CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}'
_USAGE_ONLY = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}'


def _reference_ends(data: bytes) -> list[int]:
    return [m.end() for m in re.finditer(rb"\n\n", data)]


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b"\n", b"a", b"\n\n", b"data: x", b"\n\n\n"]), max_size=30))
def test_event_end_searches_match_a_left_to_right_reading(data: list[bytes]) -> None:
    blob = b"".join(data)
    ends = _reference_ends(blob)
    assert _first_event_end(blob, 0) == (ends[0] if ends else -1)
    assert _last_event_end(blob, 0) == (ends[-1] if ends else -1)


@settings(max_examples=150, deadline=None)
@given(
    blanks=st.lists(st.integers(min_value=2, max_value=5), min_size=6, max_size=6),
    usage_at=st.integers(min_value=0, max_value=5),
    positions=cuts(),
)
def test_streams_with_blank_line_runs_strip_the_same_whatever_the_split(
    blanks: list[int], usage_at: int, positions: list[int]
) -> None:
    parts = [(_USAGE_ONLY if i == usage_at else _CONTENT) + b"\n" * n for i, n in enumerate(blanks)]
    data = b"".join(parts) + b"data: [DONE]\n\n"
    whole = strip([data])
    assert strip(chunked(data, positions)) == whole
    assert strip(bytewise(data)) == whole
    assert b'"prompt_tokens"' not in whole and b'"usage":null' not in whole
    assert whole.count(b"data: ") == len(blanks)  # the usage event (and only it) is gone


def test_a_crlf_blank_line_right_at_a_chunk_start_is_one_event_end() -> None:
    """Regression (found by hypothesis): chunk 2 starting with the event's CRLF CRLF was cut after
    ``\\r\\n\\r`` (the boundary probe saw only 3 bytes of it), so one LF went missing."""
    data = raw("chat_stream_reasoning_usage.sse").replace(b"\n", b"\r\n")
    for at in [i for i in range(1, len(data)) if data[i : i + 4] == b"\r\n\r\n"]:
        assert strip([data[:at], data[at:]]) == strip([data]), at
        assert strip([data[: at + 1], data[at + 1 :]]) == strip([data]), at


def test_a_cr_event_end_at_a_chunk_end_is_resolved_by_the_next_chunk() -> None:
    """Regression (found by a stress run): CR-only framing, a chunk ending with the event's CR CR.
    The end was deferred (the CR could be half of a CRLF) and then never taken, so the next event
    (the usage chunk) was read as part of it and reached the client."""
    data = raw("chat_stream_reasoning_usage.sse").replace(b"\n", b"\r")
    for at in [i + 2 for i in range(len(data)) if data[i : i + 2] == b"\r\r"]:
        assert strip([data[:at], data[at:]]) == strip([data]), at
    assert b'"prompt_tokens"' not in strip([data])
