"""Issue 11, build point 3 at the tap level: never a silent $0 for a priced model.

* a usage count that is not a non-negative integer (or above ``MAX_TOKENS_PER_CALL``) makes the usage
  invalid: every tap says ``invalid_usage`` (the meter estimates), never a $0 "reported" usage;
* a 200 body whose Content-Type is wrong is read the way its endpoint answers (JSON or SSE);
* an SSE event over ``max_event_bytes`` is not read: ``oversized_event``;
* JSON bodies too large to parse on the loop are skimmed: the same usage, model, tier, id, tools.

Every stream case also runs with its input split at arbitrary byte positions.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.usage import MAX_TOKENS_PER_CALL, Usage
from proxy.http.observation import Observation, Tap
from proxy.usage.estimate import TEXT_PIECE_CHARS, count_text
from proxy.usage.extract import (
    InvalidUsage,
    completion_usage,
    embeddings_usage,
    responses_usage,
    transcription_usage,
)
from proxy.usage.plan import Call, SniffTap, choose_tap
from proxy.usage.readers import chat_reader, embeddings_reader, responses_reader
from proxy.usage.taps import (
    PARSE_WHOLE_BYTES,
    ChatStreamTap,
    JsonBodyTap,
    ResponsesStreamTap,
    UsageEventStreamTap,
)
from tests.support.product import _loaded_encodings
from tests.support.usage_data import as_json, chunked, cuts, raw


def run(tap: Tap, pieces: list[bytes], complete: bool = True) -> Observation:
    for piece in pieces:
        tap.feed(piece)
    return tap.finish(complete=complete)


BAD_COUNTS: list[Any] = [
    -1000,
    -1,
    "1000",
    "12",
    12.0,
    12.5,
    True,
    False,
    [12],
    {"n": 12},
    MAX_TOKENS_PER_CALL + 1,
    10**30,
    float("nan"),
    float("inf"),
]
bad_counts = st.one_of(
    st.sampled_from(BAD_COUNTS),
    st.integers(max_value=-1),
    st.integers(min_value=MAX_TOKENS_PER_CALL + 1),
    st.text(max_size=8),
    st.floats(allow_nan=True),
    st.booleans(),
)

CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 1,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CHAT_PATHS = [
    ("prompt_tokens",),
    ("completion_tokens",),
    ("prompt_tokens_details", "cached_tokens"),
    ("prompt_tokens_details", "audio_tokens"),
    ("completion_tokens_details", "reasoning_tokens"),
    ("completion_tokens_details", "accepted_prediction_tokens"),
    ("completion_tokens_details", "rejected_prediction_tokens"),
]


def _with(usage: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(usage)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


# --- the extractors -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(CHAT_PATHS), value=bad_counts)
def test_any_bad_count_anywhere_makes_chat_usage_invalid(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(InvalidUsage):
        completion_usage(_with(CHAT_USAGE, path, value))


@settings(max_examples=100, deadline=None)
@given(value=bad_counts, key=st.sampled_from(["input_tokens", "output_tokens"]))
def test_bad_counts_make_responses_and_embeddings_usage_invalid(value: Any, key: str) -> None:
    with pytest.raises(InvalidUsage):
        responses_usage({"input_tokens": 3, "output_tokens": 4, key: value})
    with pytest.raises(InvalidUsage):
        embeddings_usage({"prompt_tokens": value})


@settings(max_examples=100, deadline=None)
@given(value=st.integers(min_value=0, max_value=MAX_TOKENS_PER_CALL))
def test_every_sane_count_is_kept_exactly(value: int) -> None:
    assert completion_usage({"prompt_tokens": value, "completion_tokens": 0}).input_tokens == value


def test_absent_or_null_counts_are_zero() -> None:
    usage = completion_usage(
        {"prompt_tokens": 7, "completion_tokens": None, "prompt_tokens_details": None}
    )
    assert usage == Usage(input_tokens=7)


@pytest.mark.parametrize("seconds", [-1, "abc", True, [], float("nan"), 10**13])
def test_bad_transcription_seconds_are_invalid(seconds: Any) -> None:
    with pytest.raises(InvalidUsage):
        transcription_usage({"type": "duration", "seconds": seconds})


# --- the taps: invalid usage is estimated, never $0 "reported" --------------------------------


@pytest.mark.parametrize("value", [-1000, "1000", 1.5, MAX_TOKENS_PER_CALL + 1])
def test_chat_json_with_invalid_usage_is_estimated(value: Any) -> None:
    body = {**as_json("chat_completion_minimal.json")}
    body["usage"] = {**body["usage"], "prompt_tokens": value}
    obs = run(JsonBodyTap(chat_reader(retrieval=False, stored=False)), [orjson.dumps(body)])
    assert obs.usage is None and obs.source == "none"
    assert obs.usage_expected and obs.estimate_reason == "invalid_usage"
    assert obs.model == body["model"]


def test_responses_and_embeddings_json_with_invalid_usage_are_estimated() -> None:
    body = as_json("responses_tools.json")
    body["usage"]["output_tokens"] = -5
    obs = run(JsonBodyTap(responses_reader(retrieval=False, stored=True)), [orjson.dumps(body)])
    assert (obs.usage, obs.estimate_reason, obs.usage_expected) == (None, "invalid_usage", True)
    emb = as_json("embeddings_base64.json")
    emb["usage"]["prompt_tokens"] = "8"
    obs = run(JsonBodyTap(embeddings_reader), [orjson.dumps(emb)])
    assert (obs.usage, obs.estimate_reason) == (None, "invalid_usage")


def _invalid_chat_stream() -> bytes:
    data = raw("chat_stream_include_usage.sse")
    return data.replace(b'"prompt_tokens":19', b'"prompt_tokens":-1000')


@settings(max_examples=60, deadline=None)
@given(positions=cuts())
def test_chat_stream_with_invalid_usage_is_estimated_whatever_the_split(
    positions: list[int],
) -> None:
    data = _invalid_chat_stream()
    assert b'"prompt_tokens":-1000' in data
    obs = run(ChatStreamTap(), chunked(data, positions))
    assert obs.source == "none" and obs.usage is None
    assert obs.estimate_reason == "invalid_usage" and obs.usage_expected
    assert obs.model == "gpt-4o-mini-2024-07-18"
    assert obs.output_text  # the deltas are kept for the estimate


def test_responses_stream_with_invalid_usage_is_estimated() -> None:
    data = raw("responses_stream_completed.sse").replace(
        b'"input_tokens":', b'"input_tokens":"1000","x":'
    )
    obs = run(ResponsesStreamTap(dedupe=True), [data])
    assert obs.source == "none" and obs.estimate_reason == "invalid_usage"
    assert obs.model is not None


EMPTY_USAGES = [{}, {"total_tokens": 0}, {"prompt_tokens": None}, {"input_tokens": None}]


@pytest.mark.parametrize("usage", EMPTY_USAGES)
def test_a_usage_object_without_its_totals_is_invalid_never_zero(usage: dict[str, Any]) -> None:
    """Found by attacking the merged product: ``"usage": {}`` was billed as a reported $0."""
    for extract in (completion_usage, responses_usage, embeddings_usage):
        with pytest.raises(InvalidUsage):
            extract(usage)
    body = {**as_json("chat_completion_minimal.json"), "usage": usage}
    obs = run(JsonBodyTap(chat_reader(retrieval=False, stored=False)), [orjson.dumps(body)])
    assert (obs.usage, obs.estimate_reason, obs.usage_expected) == (None, "invalid_usage", True)


@settings(max_examples=40, deadline=None)
@given(positions=cuts(), usage=st.sampled_from(EMPTY_USAGES))
def test_an_empty_usage_chunk_after_the_real_one_never_makes_a_stream_free(
    positions: list[int], usage: dict[str, Any]
) -> None:
    data = raw("chat_stream_include_usage.sse").replace(
        b"data: [DONE]",
        b'data: {"id":"x","object":"chat.completion.chunk","choices":[],"usage":'
        + orjson.dumps(usage)
        + b"}\n\ndata: [DONE]",
    )
    obs = run(ChatStreamTap(), chunked(data, positions))
    assert obs.source != "reported" or (obs.usage is not None and obs.usage.input_tokens > 0)
    assert obs.source == "reported" or obs.estimate_reason == "invalid_usage"


def test_a_responses_stream_with_empty_usage_is_estimated() -> None:
    data = raw("responses_stream_completed.sse")
    start = data.index(b'"usage":{', data.index(b"response.completed"))
    end = data.index(b"}", data.index(b"output_tokens_details", start)) + 1
    end = data.index(b"}", end) + 1
    data = data[:start] + b'"usage":{}' + data[end:]
    obs = run(ResponsesStreamTap(dedupe=True), [data])
    assert obs.source == "none" and obs.estimate_reason == "invalid_usage"


def test_image_stream_with_invalid_usage_is_estimated() -> None:
    event = b'event: image_generation.completed\ndata: {"type":"image_generation.completed",'
    event += b'"b64_json":"AAAA","usage":{"input_tokens":-3,"output_tokens":10}}\n\n'
    obs = run(UsageEventStreamTap(model="gpt-image-1"), [event])
    assert (obs.usage, obs.estimate_reason, obs.usage_expected) == (None, "invalid_usage", True)


# --- oversized events -------------------------------------------------------------------------


def _stream_with_giant_delta(size: int, *, usage: bool) -> bytes:
    data = raw("chat_stream_include_usage.sse" if usage else "chat_stream_plain.sse")
    first_end = data.index(b"\n\n") + 2
    giant = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * size + b'"}}]}\n\n'
    return data[:first_end] + giant + data[first_end:]


@settings(max_examples=40, deadline=None)
@given(positions=cuts(max_cuts=20))
def test_an_oversized_event_makes_the_stream_estimated(positions: list[int]) -> None:
    data = _stream_with_giant_delta(20_000, usage=False)
    obs = run(ChatStreamTap(max_event_bytes=4096), chunked(data, positions))
    assert obs.source == "none" and obs.estimate_reason == "oversized_event"
    assert obs.model == "gpt-4o-mini-2024-07-18"
    # with a bound above it, the same stream is an ordinary no-usage stream
    obs = run(ChatStreamTap(max_event_bytes=1 << 20), chunked(data, positions))
    assert obs.estimate_reason == "no_usage"


def test_an_oversized_delta_does_not_hide_the_usage_chunk() -> None:
    data = _stream_with_giant_delta(20_000, usage=True)
    obs = run(
        ChatStreamTap(max_event_bytes=4096), [data[i : i + 1000] for i in range(0, len(data), 1000)]
    )
    assert obs.source == "reported" and obs.usage == Usage(input_tokens=19, output_tokens=14)


def test_an_oversized_terminal_event_makes_a_responses_stream_estimated() -> None:
    data = raw("responses_stream_completed.sse")
    obs = run(ResponsesStreamTap(dedupe=True, max_event_bytes=256), [data])
    assert obs.source == "none" and obs.estimate_reason == "oversized_event"


# --- mislabelled bodies: the endpoint decides how a 200 body is read ----------------------------


def _tap(endpoint: str, path: str, content_type: str, request: dict[str, Any]) -> Tap:
    return choose_tap(
        Call(
            endpoint=endpoint,
            method="POST",
            path=path,
            status=200,
            content_type=content_type,
            request=request,
            model_requested=request.get("model"),
        )
    )


LABELS = ["text/plain", "text/plain; charset=utf-8", "application/octet-stream", "", "text/html"]


@settings(max_examples=80, deadline=None)
@given(label=st.sampled_from(LABELS), positions=cuts(), pad=st.sampled_from([b"", b"\n  ", b" "]))
def test_a_mislabelled_chat_body_is_read_as_what_it_is(
    label: str, positions: list[int], pad: bytes
) -> None:
    request = {"model": "gpt-4o-mini", "messages": []}
    body = pad + orjson.dumps(as_json("chat_completion_minimal.json"))
    tap = _tap("chat.completions", "/v1/chat/completions", label, request)
    assert isinstance(tap, SniffTap)
    obs = run(tap, chunked(body, positions))
    assert obs.source == "reported" and obs.usage is not None and obs.usage.input_tokens > 0
    stream = raw("chat_stream_include_usage.sse")
    obs = run(
        _tap("chat.completions", "/v1/chat/completions", label, request), chunked(stream, positions)
    )
    assert obs.source == "reported" and obs.usage == Usage(input_tokens=19, output_tokens=14)


@pytest.mark.parametrize("label", LABELS)
def test_mislabelled_responses_and_embeddings_bodies_are_read(label: str) -> None:
    obs = run(
        _tap("responses", "/v1/responses", label, {"model": "gpt-4.1"}),
        [orjson.dumps(as_json("responses_tools.json"))],
    )
    assert obs.source == "reported" and obs.usage is not None
    obs = run(
        _tap("responses", "/v1/responses", label, {"model": "gpt-4.1", "stream": True}),
        [raw("responses_stream_completed.sse")],
    )
    assert obs.source == "reported"
    obs = run(
        _tap("embeddings", "/v1/embeddings", label, {"model": "text-embedding-3-small"}),
        [orjson.dumps(as_json("embeddings_base64.json"))],
    )
    assert obs.source == "reported" and obs.usage is not None and obs.usage.input_tokens > 0


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"<html>bad gateway</html>", b"\xff\xfe\x00", b"dat"]
)
def test_an_unreadable_priced_body_asks_for_an_estimate(body: bytes) -> None:
    obs = run(_tap("chat.completions", "/v1/chat/completions", "text/plain", {}), [body])
    assert obs.usage is None and obs.usage_expected  # the meter estimates: never a silent $0


# --- JSON bodies too large to parse on the loop are skimmed -------------------------------------


def _big_responses_body() -> dict[str, Any]:
    body = as_json("responses_tools.json")
    body["output"].append(
        {
            "id": "msg_big",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "y" * (2 * PARSE_WHOLE_BYTES)}],
        }
    )
    return body


@settings(max_examples=15, deadline=None)
@given(positions=cuts(max_cuts=40))
def test_a_large_responses_body_is_skimmed_to_the_same_observation(positions: list[int]) -> None:
    data = orjson.dumps(_big_responses_body())
    positions = [p * 211 for p in positions]  # spread the cuts over the 2 MB body
    skimmed = run(
        JsonBodyTap(responses_reader(retrieval=False, stored=True)), chunked(data, positions)
    )
    parsed = responses_reader(retrieval=False, stored=True)(orjson.loads(data))  # a whole parse
    assert skimmed.source == "reported"
    assert skimmed.usage == parsed.usage and skimmed.usage is not None
    assert skimmed.usage.units  # the built-in tool calls, counted as the chunks passed
    assert (skimmed.model, skimmed.service_tier, skimmed.response_id) == (
        parsed.model,
        parsed.service_tier,
        parsed.response_id,
    )
    assert skimmed.extra == parsed.extra  # status


def test_a_large_embeddings_body_is_skimmed() -> None:
    vectors = b",".join([b'{"object":"embedding","index":0,"embedding":[0.0123,-0.5]}'] * 40_000)
    data = b'{"object":"list","data":[' + vectors
    data += b'],"model":"text-embedding-3-large","usage":{"prompt_tokens":77,"total_tokens":77}}'
    assert len(data) > PARSE_WHOLE_BYTES
    obs = run(
        JsonBodyTap(embeddings_reader), [data[i : i + 65536] for i in range(0, len(data), 65536)]
    )
    assert obs.usage == Usage(input_tokens=77) and obs.model == "text-embedding-3-large"


def test_a_skimmed_body_with_null_usage_is_not_zero_usage() -> None:
    data = b'{"id":"chatcmpl-x","model":"gpt-4o","choices":[' + b" " * (2 * PARSE_WHOLE_BYTES)
    data += b'],"usage":null,"metadata":{}}'
    obs = run(JsonBodyTap(chat_reader(retrieval=False, stored=False)), [data])
    assert obs.usage is None and obs.usage_expected  # estimated, not $0 "reported"


# --- estimation of long texts ---------------------------------------------------------------------


def test_long_texts_are_counted_in_pieces_with_the_same_result() -> None:
    enc = _loaded_encodings().get("o200k_base")
    text = "The quarterly report, in words: naïve café 東京 🙂 " * (4 * TEXT_PIECE_CHARS // 40)
    assert len(text) > 3 * TEXT_PIECE_CHARS
    assert count_text(enc, text) == len(enc.encode_ordinary(text))


def test_tool_items_before_an_overflow_are_counted_too() -> None:
    data = orjson.dumps(_big_responses_body())
    whole = responses_reader(retrieval=False, stored=True)(orjson.loads(data))
    tap = JsonBodyTap(responses_reader(retrieval=False, stored=True), max_bytes=10_000)
    obs = run(tap, [data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert obs.usage == whole.usage and obs.usage is not None and obs.usage.units


@pytest.mark.parametrize("stream", [True, False])
def test_a_label_that_contradicts_the_request_is_checked_against_the_body(stream: bool) -> None:
    """A stream labelled application/json (or JSON labelled text/event-stream) is still read."""
    request = {"model": "gpt-4o-mini", "stream": stream}
    label = "application/json" if stream else "text/event-stream"
    body = raw("chat_stream_include_usage.sse") if stream else compact_chat()
    obs = run(_tap("chat.completions", "/v1/chat/completions", label, request), [body])
    assert obs.source == "reported" and obs.usage is not None and obs.usage.input_tokens > 0


def compact_chat() -> bytes:
    return orjson.dumps(as_json("chat_completion_minimal.json"))
