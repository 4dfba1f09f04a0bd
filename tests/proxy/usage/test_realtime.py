"""The WebSocket session tap: one observation per session, the sum of every finished response."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.usage import Usage
from proxy.usage.plan import Call, choose_tap
from proxy.usage.realtime import SessionUsageTap, is_candidate, query_model, realtime_usage
from tests.support.usage_data import REALTIME_REFERENCE_USAGE

CACHED_AUDIO_USAGE: dict[str, Any] = {
    "total_tokens": 700,
    "input_tokens": 600,
    "output_tokens": 100,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 350,
        "image_tokens": 50,
        "cached_tokens": 300,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 180, "image_tokens": 20},
    },
    "output_token_details": {"text_tokens": 40, "audio_tokens": 60},
}


def done(rid: str, usage: dict[str, Any] | None, **response: Any) -> bytes:
    body: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": "completed"}
    if usage is not None:
        body["usage"] = usage
    body.update(response)
    return orjson.dumps({"type": "response.done", "event_id": f"ev_{rid}", "response": body})


def audio_delta(size: int = 30_000) -> bytes:
    return orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "ev_a",
            "response_id": "resp_x",
            "delta": "QUJD" * (size // 4),
        }
    )


def session(kind: str, model: str) -> bytes:
    return orjson.dumps({"type": kind, "event_id": "ev_s", "session": {"model": model}})


def test_two_responses_are_summed_into_one_observation_with_the_first_id() -> None:
    tap = SessionUsageTap(model="gpt-realtime")
    for message in (
        session("session.created", "gpt-realtime-2025-08-28"),
        audio_delta(),
        done("resp_1", REALTIME_REFERENCE_USAGE),
        audio_delta(),
        done("resp_2", CACHED_AUDIO_USAGE),
    ):
        tap.feed(message)
    obs = tap.finish(complete=True)
    assert obs.source == "reported"
    assert obs.response_id == "resp_1"
    assert obs.model == "gpt-realtime-2025-08-28"  # the session's resolved model beats ?model=
    assert obs.usage == Usage(
        input_tokens=132 + 600,
        cached_input_tokens=64 + 300,
        output_tokens=121 + 100,
        audio_input_tokens=13 + 350,
        image_input_tokens=0 + 50,
        audio_output_tokens=91 + 60,
        units={
            "cached_audio_input_tokens": Decimal(180),
            "cached_image_input_tokens": Decimal(20),
        },
    )
    assert obs.extra["responses"] == "2"


def test_cached_splits_become_units_only_when_present() -> None:
    assert realtime_usage(REALTIME_REFERENCE_USAGE).units == {}
    assert realtime_usage(CACHED_AUDIO_USAGE).units == {
        "cached_audio_input_tokens": Decimal(180),
        "cached_image_input_tokens": Decimal(20),
    }


def test_a_session_cut_mid_response_keeps_the_finished_responses_exactly() -> None:
    tap = SessionUsageTap(model="gpt-realtime")
    tap.feed(done("resp_1", REALTIME_REFERENCE_USAGE))
    tap.feed(orjson.dumps({"type": "response.created", "response": {"id": "resp_2"}}))
    tap.feed(audio_delta())
    obs = tap.finish(complete=False)
    assert obs.source == "reported"
    assert obs.usage is not None and obs.usage.input_tokens == 132
    assert obs.usage.output_tokens == 121
    assert obs.estimate_reason is None


def test_a_session_with_no_finished_response_reports_nothing_and_keeps_the_url_model() -> None:
    tap = SessionUsageTap(model="gpt-4o-mini-realtime-preview")
    tap.feed(audio_delta())
    obs = tap.finish(complete=False)
    assert (obs.usage, obs.source, obs.model) == (None, "none", "gpt-4o-mini-realtime-preview")
    assert not obs.usage_expected  # nothing to estimate


def test_session_updated_model_wins_over_created() -> None:
    tap = SessionUsageTap(model=None)
    tap.feed(session("session.created", "gpt-realtime"))
    tap.feed(session("session.updated", "gpt-realtime-2025-08-28"))
    tap.feed(done("resp_1", REALTIME_REFERENCE_USAGE))
    assert tap.finish(complete=True).model == "gpt-realtime-2025-08-28"


def test_failed_or_cancelled_responses_without_usage_add_nothing() -> None:
    tap = SessionUsageTap(model="gpt-realtime")
    tap.feed(done("resp_0", None, status="cancelled"))
    tap.feed(done("resp_1", REALTIME_REFERENCE_USAGE))
    obs = tap.finish(complete=True)
    assert obs.usage is not None and obs.usage.input_tokens == 132
    assert obs.response_id == "resp_0"  # the first finished response, with or without usage
    assert obs.extra["responses"] == "1"


def test_responses_websocket_mode_reads_completed_events_with_model_and_tools() -> None:
    response = {
        "id": "resp_ws_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-4.1-mini-2025-04-14",
        "service_tier": "default",
        "output": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}],
        "usage": {
            "input_tokens": 40,
            "input_tokens_details": {"cached_tokens": 10},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 47,
        },
    }
    tap = choose_tap(
        Call(
            endpoint="responses",
            method="GET",
            path="/v1/responses",
            status=101,
            content_type="",
            request={},
        )
    )
    tap.feed(orjson.dumps({"type": "response.created", "response": {**response, "usage": None}}))
    tap.feed(orjson.dumps({"type": "response.output_text.delta", "delta": "hi"}))
    tap.feed(orjson.dumps({"type": "response.completed", "response": response}))
    obs = tap.finish(complete=True)
    assert obs.usage == Usage(
        input_tokens=40,
        cached_input_tokens=10,
        output_tokens=7,
        units={"web_search_calls": Decimal(1)},
    )
    assert (obs.model, obs.service_tier, obs.response_id) == (
        "gpt-4.1-mini-2025-04-14",
        "default",
        "resp_ws_1",
    )


def test_only_candidate_events_are_parsed() -> None:
    assert not is_candidate(audio_delta())
    assert not is_candidate(b'{"type":"response.output_audio_transcript.delta","delta":"x"}')
    assert is_candidate(done("resp_1", REALTIME_REFERENCE_USAGE))
    assert is_candidate(session("session.created", "gpt-realtime"))
    # Another key order still finds the event (slow path: substring test).
    assert is_candidate(b'{"event_id": "e", "type": "response.done", "response": {}}')
    # A quoted event name inside a string value is escaped, so it is no candidate.
    text = orjson.dumps({"event_id": "e", "delta": 'say "response.done"'})
    assert not is_candidate(text)


def test_malformed_messages_are_ignored() -> None:
    tap = SessionUsageTap(model="gpt-realtime")
    for message in (
        b'{"type":"response.done", "response": ',
        b'{"type":"response.done","response":"nope"}',
        b'["response.done"]',
        b"\x00\xff binary",
        b'{"type":"session.created","session":null}',
    ):
        tap.feed(message)
    tap.feed(done("resp_1", REALTIME_REFERENCE_USAGE))
    obs = tap.finish(complete=True)
    assert obs.usage is not None and obs.usage.input_tokens == 132
    assert obs.model == "gpt-realtime"


def test_websocket_taps_only_for_realtime_and_responses() -> None:
    def tap_for(endpoint: str) -> object:
        return choose_tap(
            Call(
                endpoint=endpoint,
                method="GET",
                path=f"/v1/{endpoint}",
                status=101,
                content_type="",
                request={},
                model_requested="gpt-realtime",
            )
        )

    assert isinstance(tap_for("realtime"), SessionUsageTap)
    assert isinstance(tap_for("responses"), SessionUsageTap)
    assert not isinstance(tap_for("other"), SessionUsageTap)


def test_query_model() -> None:
    assert query_model("model=gpt-realtime") == "gpt-realtime"
    assert query_model("a=1&model=gpt-4o-realtime-preview%2D2024") == "gpt-4o-realtime-preview-2024"
    assert query_model("call_id=x") is None
    assert query_model("model=") is None


_USAGES = st.builds(
    lambda text, audio, cached_audio, out_audio, out_text: {
        "input_tokens": text + audio,
        "output_tokens": out_audio + out_text,
        "input_token_details": {
            "text_tokens": text,
            "audio_tokens": audio,
            "cached_tokens": min(cached_audio, audio),
            "cached_tokens_details": {"audio_tokens": min(cached_audio, audio)},
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    },
    *(st.integers(0, 5000) for _ in range(5)),
)


@settings(max_examples=60, deadline=None)
@given(
    usages=st.lists(_USAGES, min_size=1, max_size=6),
    deltas=st.lists(st.integers(0, 3), min_size=6, max_size=6),
)
def test_any_interleaving_sums_every_response_exactly(
    usages: list[dict[str, Any]], deltas: list[int]
) -> None:
    tap = SessionUsageTap(model="gpt-realtime")
    for i, usage in enumerate(usages):
        for _ in range(deltas[i]):
            tap.feed(audio_delta(400))
        tap.feed(done(f"resp_{i}", usage))
    obs = tap.finish(complete=True)
    assert obs.usage is not None
    assert obs.usage.input_tokens == sum(u["input_tokens"] for u in usages)
    assert obs.usage.output_tokens == sum(u["output_tokens"] for u in usages)
    cached_audio = sum(u["input_token_details"]["cached_tokens"] for u in usages)
    assert obs.usage.cached_input_tokens == cached_audio
    assert obs.usage.units.get("cached_audio_input_tokens", Decimal(0)) == cached_audio
    assert obs.response_id == "resp_0"
