from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.usage import Usage
from proxy.http.observation import Observation, Tap
from proxy.usage.readers import (
    batch_reader,
    chat_reader,
    compact_reader,
    embeddings_reader,
    free_reader,
    images_reader,
    responses_reader,
    transcription_reader,
)
from proxy.usage.taps import ChatStreamTap, JsonBodyTap, ResponsesStreamTap, UsageEventStreamTap
from tests.support.usage_data import chunked, compact, cuts, raw


def run(tap: Tap, pieces: list[bytes], complete: bool = True) -> Observation:
    for piece in pieces:
        tap.feed(piece)
    return tap.finish(complete=complete)


# --- chat / legacy completions streams -------------------------------------------------------


def test_chat_stream_usage_chunk_is_read_exactly() -> None:
    obs = run(ChatStreamTap(), [raw("chat_stream_include_usage.sse")])
    assert obs.source == "reported"
    assert obs.usage == Usage(input_tokens=19, output_tokens=14)
    assert (obs.model, obs.service_tier, obs.response_id) == (
        "gpt-4o-mini-2024-07-18",
        "default",
        "chatcmpl-1",
    )


def test_chat_stream_reasoning_and_cache_details_land_in_fields() -> None:
    obs = run(ChatStreamTap(), [raw("chat_stream_reasoning_usage.sse")])
    assert obs.usage == Usage(
        input_tokens=2048,
        cached_input_tokens=1920,
        cache_write_tokens=64,
        output_tokens=700,
        reasoning_tokens=640,
    )
    assert (obs.model, obs.service_tier) == ("o3-2025-04-16", "flex")


def test_legacy_completions_stream_usage() -> None:
    obs = run(ChatStreamTap(), [raw("completions_stream_include_usage.sse")])
    assert obs.usage == Usage(input_tokens=5, output_tokens=3)
    assert obs.model == "gpt-3.5-turbo-instruct"


def test_chat_stream_without_usage_asks_for_estimate_with_the_text_seen() -> None:
    obs = run(ChatStreamTap(), [raw("chat_stream_plain.sse")])
    assert obs.source == "none" and obs.usage_expected
    assert obs.estimate_reason == "no_usage"
    assert obs.output_text == "Hello! How can I help you today? Ünïcødé ✓ 日本語 🙂"


def test_cut_chat_stream_is_marked_cut() -> None:
    obs = run(ChatStreamTap(), [raw("chat_stream_cut.sse")], complete=False)
    assert obs.estimate_reason == "stream_cut"
    assert obs.output_text == "Hello! How can I"  # the half-received event is dropped


def test_tool_call_arguments_count_as_output() -> None:
    obs = run(ChatStreamTap(), [raw("chat_stream_tools_no_usage.sse")])
    assert (
        obs.output_text == 'get_current_weather{"location": "San Francisco, CA", "unit": "celsius"}'
    )
    assert obs.model == "gpt-4o-2024-08-06"


def test_error_event_mid_stream() -> None:
    obs = run(ChatStreamTap(), [raw("chat_stream_error.sse")])
    assert obs.estimate_reason == "stream_error" and obs.usage_expected


CHAT_STREAMS = [
    "chat_stream_include_usage.sse",
    "chat_stream_plain.sse",
    "chat_stream_reasoning_usage.sse",
    "chat_stream_tools_no_usage.sse",
    "completions_stream_include_usage.sse",
]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(CHAT_STREAMS), positions=cuts())
def test_chat_tap_any_split_equals_whole(name: str, positions: list[int]) -> None:
    data = raw(name)
    assert run(ChatStreamTap(), chunked(data, positions)) == run(ChatStreamTap(), [data])


# --- responses streams ----------------------------------------------------------------------


def test_responses_stream_completed_usage_model_tier_and_tools() -> None:
    obs = run(ResponsesStreamTap(dedupe=True), [raw("responses_stream_completed.sse")])
    assert obs.source == "reported"
    assert obs.usage == Usage(
        input_tokens=328,
        cached_input_tokens=128,
        output_tokens=152,
        reasoning_tokens=64,
        units={"web_search_calls": Decimal(1), "containers": Decimal(1)},
    )
    # the terminal event's resolved snapshot and tier, not response.created's
    assert (obs.model, obs.service_tier) == ("gpt-5.4-2026-03-05", "flex")
    assert (obs.dedupe_kind, obs.dedupe_id) == ("response", "resp_stream1")


def test_responses_stream_incomplete_uses_its_usage() -> None:
    obs = run(ResponsesStreamTap(dedupe=False), [raw("responses_stream_incomplete.sse")])
    assert obs.source == "reported" and obs.usage is not None
    assert obs.usage.output_tokens == 100
    assert obs.extra["status"] == "incomplete"
    assert obs.dedupe_id is None


def test_responses_stream_failed_without_usage_is_estimated_later() -> None:
    obs = run(ResponsesStreamTap(dedupe=True), [raw("responses_stream_failed.sse")])
    assert obs.source == "none" and obs.usage_expected
    assert obs.estimate_reason == "response_failed"
    assert obs.output_text == "Hi there, ünï 🙂 friend."
    # tool calls seen before the failure are still counted
    assert obs.usage == Usage(units={"web_search_calls": Decimal(1), "containers": Decimal(1)})


def test_responses_stream_cut_keeps_header_model() -> None:
    obs = run(ResponsesStreamTap(dedupe=True), [raw("responses_stream_cut.sse")], complete=False)
    assert obs.estimate_reason == "stream_cut"
    assert (obs.model, obs.response_id) == ("gpt-5.4", "resp_stream1")


def test_responses_stream_without_event_lines() -> None:
    data = b"".join(
        line + b"\n"
        for line in raw("responses_stream_completed.sse").split(b"\n")
        if not line.startswith(b"event:")
    )
    obs = run(ResponsesStreamTap(dedupe=True), [data])
    assert obs.usage is not None and obs.usage.input_tokens == 328


RESPONSE_STREAMS = [
    "responses_stream_completed.sse",
    "responses_stream_incomplete.sse",
    "responses_stream_failed.sse",
]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(RESPONSE_STREAMS), positions=cuts())
def test_responses_tap_any_split_equals_whole(name: str, positions: list[int]) -> None:
    data = raw(name)
    whole = run(ResponsesStreamTap(dedupe=True), [data])
    assert run(ResponsesStreamTap(dedupe=True), chunked(data, positions)) == whole


def test_usage_event_stream_tap_reads_image_completed_event() -> None:
    stream = (
        b'event: image_generation.partial_image\ndata: {"type":"image_generation.partial_image","b64_json":"AAA"}\n\n'
        b'event: image_generation.completed\ndata: {"type":"image_generation.completed","b64_json":"AAA",'
        b'"usage":{"input_tokens":50,"output_tokens":4160,"total_tokens":4210,'
        b'"input_tokens_details":{"text_tokens":10,"image_tokens":40}}}\n\n'
    )
    obs = run(UsageEventStreamTap(model="gpt-image-1"), [stream])
    assert obs.usage == Usage(input_tokens=50, image_input_tokens=40, output_tokens=4160)


# --- JSON bodies ----------------------------------------------------------------------------


def json_tap_run(reader, name: str, pieces: int = 1) -> Observation:  # type: ignore[no-untyped-def]
    data = compact(name)
    step = max(1, len(data) // pieces)
    return run(JsonBodyTap(reader), [data[i : i + step] for i in range(0, len(data), step)])


def test_chat_json_with_all_details() -> None:
    obs = json_tap_run(
        chat_reader(retrieval=False, stored=False), "chat_completion_details.json", 7
    )
    assert obs.usage == Usage(
        input_tokens=1117,
        cached_input_tokens=1024,
        audio_input_tokens=12,
        image_input_tokens=105,
        output_tokens=446,
        reasoning_tokens=256,
        audio_output_tokens=30,
        accepted_prediction_tokens=40,
        rejected_prediction_tokens=8,
    )
    assert (obs.model, obs.service_tier) == ("gpt-4o-2024-08-06", "priority")
    assert obs.dedupe_id is None  # not stored: nothing to dedupe


def test_minimal_usage_without_details_is_zero_filled() -> None:
    obs = json_tap_run(chat_reader(retrieval=False, stored=True), "chat_completion_minimal.json")
    assert obs.usage == Usage(input_tokens=9, output_tokens=3)
    assert (obs.dedupe_kind, obs.dedupe_id) == ("chat.completion", "chatcmpl-abc123")


def test_legacy_completions_json() -> None:
    obs = json_tap_run(chat_reader(retrieval=False, stored=False), "completions.json")
    assert obs.usage == Usage(input_tokens=5, output_tokens=7)


def test_responses_json_counts_built_in_tools() -> None:
    obs = json_tap_run(responses_reader(retrieval=False, stored=True), "responses_tools.json", 3)
    assert obs.usage is not None
    assert obs.usage.units == {
        "web_search_calls": Decimal(2),
        "file_search_calls": Decimal(1),
        "containers": Decimal(1),  # two calls in one container
    }
    assert obs.usage.input_tokens == 328 and obs.usage.reasoning_tokens == 64


def test_background_queued_is_not_estimated() -> None:
    obs = json_tap_run(
        responses_reader(retrieval=False, stored=True), "responses_background_queued.json"
    )
    assert obs.usage is None and not obs.usage_expected
    assert obs.extra["status"] == "queued"


def test_compact_takes_model_from_request() -> None:
    obs = json_tap_run(compact_reader("gpt-5.4"), "responses_compact.json")
    assert obs.model == "gpt-5.4" and obs.usage is not None
    assert obs.usage.input_tokens == 5000 and obs.usage.output_tokens == 800


@pytest.mark.parametrize("name", ["responses_input_tokens.json", "moderation.json"])
def test_free_endpoints_have_no_usage(name: str) -> None:
    obs = json_tap_run(free_reader, name)
    assert obs.usage is None and not obs.usage_expected


def test_embeddings_base64() -> None:
    obs = json_tap_run(embeddings_reader, "embeddings_base64.json")
    assert obs.usage == Usage(input_tokens=8)
    assert obs.model == "text-embedding-3-small"


def test_gpt_image_tokens_and_dalle_units() -> None:
    gpt = json_tap_run(images_reader({"model": "gpt-image-1"}), "images_gpt_image.json")
    assert gpt.usage == Usage(
        input_tokens=50, image_input_tokens=40, output_tokens=50, image_output_tokens=50
    )
    dalle = json_tap_run(
        images_reader({"model": "dall-e-3", "quality": "hd", "size": "1024x1792"}),
        "images_dalle.json",
    )
    assert dalle.usage == Usage(units={"image:hd:1024x1792": Decimal(1)})
    assert dalle.source == "reported" and dalle.model == "dall-e-3"


def test_transcription_tokens_and_duration() -> None:
    tokens = json_tap_run(transcription_reader("gpt-4o-transcribe"), "transcription_tokens.json")
    assert tokens.usage == Usage(input_tokens=14, audio_input_tokens=4, output_tokens=101)
    duration = json_tap_run(transcription_reader("whisper-1"), "transcription_duration.json")
    assert duration.usage == Usage(units={"audio_seconds": Decimal("8.47")})


def test_batch_terminal_usage_is_metered_at_batch_tier() -> None:
    obs = json_tap_run(batch_reader, "batch_completed.json")
    assert obs.usage == Usage(
        input_tokens=1500, cached_input_tokens=1024, output_tokens=500, reasoning_tokens=300
    )
    assert (obs.service_tier, obs.dedupe_kind, obs.dedupe_id) == ("batch", "batch", "batch_abc123")


def test_oversized_json_body_still_yields_usage_from_its_tail() -> None:
    big = b'{"object":"list","data":[' + b",".join([b'{"embedding":[0.1,0.2,0.3]}'] * 5000)
    big += b'],"model":"text-embedding-3-large","usage":{"prompt_tokens":77,"total_tokens":77}}'
    tap = JsonBodyTap(embeddings_reader, max_bytes=10_000)
    obs = run(tap, [big[i : i + 4096] for i in range(0, len(big), 4096)])
    assert obs.usage == Usage(input_tokens=77)
    assert obs.model == "text-embedding-3-large"


def test_cut_json_body_is_marked_cut() -> None:
    data = compact("chat_completion_minimal.json")
    obs = run(JsonBodyTap(chat_reader(retrieval=False, stored=False)), [data[:40]], complete=False)
    assert obs.usage is None and obs.usage_expected and obs.estimate_reason == "stream_cut"
