from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from proxy.http.exchange import Exchange
from proxy.usage.dedupe import MemoryDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from proxy.usage.sinks import MemorySink
from proxy.usage.sse import SSEDecoder
from storage.record import Outcome, RecordSink, UsageRecord
from tests.support.usage_data import chunked, compact, raw
from tests.support.usage_fakes import (
    FakePricer,
    RaisingPricer,
    RaisingSink,
    RecordingStage,
    make_exchange,
    respond,
)

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello in six words."}],
}
SSE = "text/event-stream; charset=utf-8"


@pytest.fixture(scope="module")
def encodings() -> Iterator[Encodings]:
    registry = Encodings()
    registry.preload()
    yield registry


class Harness:
    def __init__(self, encodings: Encodings, **kwargs: Any) -> None:
        self.sink = MemorySink()
        self.errors: list[tuple[str, BaseException]] = []
        self.estimated: list[tuple[str, str]] = []
        self.pricer = kwargs.pop("pricer", FakePricer())
        sinks: list[RecordSink] = kwargs.pop("sinks", [])
        self.meter = UsageMeter(
            pricer=self.pricer,
            sinks=[*sinks, self.sink],
            encodings=encodings,
            dedupe=kwargs.pop("dedupe", MemoryDedupe()),
            on_error=lambda stage, exc: self.errors.append((stage, exc)),
            on_estimated=lambda endpoint, reason: self.estimated.append((endpoint, reason)),
            **kwargs,
        )

    async def call(
        self,
        exchange: Exchange,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        outcome: Outcome = "ok",
        pieces: list[int] | None = None,
    ) -> bytes:
        """Drive one call through the hooks the way proxy.http.forward does; returns the client bytes."""
        refusal = await self.meter.on_request(exchange)
        assert refusal is None
        respond(exchange, status, content_type)
        plan = self.meter.on_response(exchange)
        sent: list[bytes] = []
        for chunk in chunked(body, pieces or []):
            sent.append(plan.rewriter.feed(chunk) if plan.rewriter else chunk)
            plan.tap.feed(chunk)
        if plan.rewriter:
            sent.append(plan.rewriter.flush())
        exchange.outcome = outcome
        self.meter.on_finish(exchange, plan)
        return b"".join(sent)

    @property
    def record(self) -> UsageRecord:
        assert len(self.sink) == 1, self.sink.records
        return self.sink.records[0]


def events(data: bytes) -> list[Any]:
    decoder = SSEDecoder()
    out = []
    for event in decoder.feed(data) + decoder.finish():
        obj = orjson.loads(event.data) if event.data != b"[DONE]" else "[DONE]"
        if isinstance(obj, dict):
            obj.pop("usage", None)
        out.append(obj)
    return out


async def test_chat_json_record_has_every_detail_and_the_responses_model(
    encodings: Encodings,
) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "service_tier": "auto"})
    await h.call(ex, compact("chat_completion_details.json"), pieces=[100, 700])
    r = h.record
    assert (r.endpoint, r.status_code, r.outcome, r.usage_source) == (
        "chat.completions",
        200,
        "ok",
        "reported",
    )
    assert (r.model_requested, r.model, r.service_tier) == (
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "priority",
    )
    assert (r.input_tokens, r.cached_input_tokens, r.audio_input_tokens, r.image_input_tokens) == (
        1117,
        1024,
        12,
        105,
    )
    assert (r.output_tokens, r.reasoning_tokens, r.audio_output_tokens) == (446, 256, 30)
    assert (r.accepted_prediction_tokens, r.rejected_prediction_tokens) == (40, 8)
    assert r.response_id == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    # priced with the response's model and tier, at the call's start time
    assert h.pricer.calls[0][1:] == ("gpt-4o-2024-08-06", "priority", ex.started_at)
    assert r.cost_usd == (
        Decimal(93) * 1 + Decimal(1024) * Decimal("0.10") + Decimal(446) * 4
    ) / Decimal(1_000_000)
    assert r.price_ref == "fake:gpt-4o-2024-08-06:priority"
    assert r.latency_ms is not None and r.latency_ms >= 0
    assert h.errors == []


async def test_request_tier_is_only_a_fallback(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "service_tier": "fast"})
    await h.call(ex, compact("chat_completion_minimal.json"))
    assert h.record.service_tier == "priority"  # response said nothing; "fast" means priority


async def test_stream_without_usage_is_injected_stripped_and_exact(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    client = await h.call(
        ex, raw("chat_stream_include_usage.sse"), content_type=SSE, pieces=[33, 500, 501, 1400]
    )
    assert ex.usage_injected
    assert ex.upstream_body is not None
    assert orjson.loads(ex.upstream_body)["stream_options"] == {"include_usage": True}
    assert events(client) == events(raw("chat_stream_plain.sse"))  # no extra chunk for the client
    r = h.record
    assert (r.usage_source, r.input_tokens, r.output_tokens, r.stream) == ("reported", 19, 14, True)


async def test_client_that_asked_for_usage_gets_the_stream_untouched(encodings: Encodings) -> None:
    h = Harness(encodings)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    ex = make_exchange("/v1/chat/completions", body=body)
    data = raw("chat_stream_include_usage.sse")
    client = await h.call(ex, data, content_type=SSE, pieces=[10, 200])
    assert not ex.usage_injected and ex.upstream_body == ex.request_body
    assert client == data
    assert h.record.input_tokens == 19


async def test_injection_switched_off_estimates_instead(encodings: Encodings) -> None:
    h = Harness(encodings, inject_stream_usage=False)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    data = raw("chat_stream_plain.sse")
    assert await h.call(ex, data, content_type=SSE) == data
    r = h.record
    assert not ex.usage_injected
    assert (r.usage_source, r.estimate_reason) == ("estimated", "no_usage")
    assert h.estimated == [("chat.completions", "no_usage")]


async def test_cut_stream_gives_a_plausible_estimate(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    await h.call(ex, raw("chat_stream_cut.sse"), content_type=SSE, outcome="client_disconnect")
    r = h.record
    assert (r.usage_source, r.estimate_reason, r.outcome) == (
        "estimated",
        "client_disconnect",
        "client_disconnect",
    )
    # "user" (1) + "Say hello in six words." (6) + 3 per message + 3 reply primer
    assert r.input_tokens == 13
    assert r.output_tokens == 5  # "Hello! How can I" -> Hello, !, How, can, I
    assert r.cost_usd is not None and r.cost_usd > 0
    assert h.estimated == [("chat.completions", "client_disconnect")]


async def test_no_response_headers_on_a_billable_call_estimates_the_prompt(
    encodings: Encodings,
) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body=CHAT)
    await h.meter.on_request(ex)
    ex.outcome = "upstream_timeout"
    h.meter.on_finish(ex, None)
    r = h.record
    assert (r.status_code, r.usage_source, r.estimate_reason) == (
        None,
        "estimated",
        "upstream_timeout",
    )
    assert (r.input_tokens, r.output_tokens) == (13, 0)


async def test_upstream_error_is_recorded_with_no_usage_and_zero_cost(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body=CHAT)
    await h.call(ex, compact("error_429.json"), status=429, outcome="upstream_error")
    r = h.record
    assert (r.status_code, r.outcome, r.usage_source, r.cost_usd) == (
        429,
        "upstream_error",
        "none",
        Decimal(0),
    )
    assert r.input_tokens == 0 and h.estimated == []


async def test_unknown_model_is_unpriced_not_free(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "model": "mystery-1"})
    body = orjson.dumps(
        {**orjson.loads(compact("chat_completion_minimal.json")), "model": "mystery-1"}
    )
    await h.call(ex, body)
    assert (h.record.cost_usd, h.record.unpriced_reason, h.record.input_tokens) == (
        None,
        "unknown_model",
        9,
    )


async def test_background_response_is_metered_once_when_it_completes(encodings: Encodings) -> None:
    h = Harness(encodings)
    post = make_exchange(
        "/v1/responses", body={"model": "gpt-4.1", "input": "hi", "background": True}
    )
    await h.call(post, compact("responses_background_queued.json"))
    first = make_exchange("/v1/responses/resp_bg1", method="GET")
    await h.call(first, compact("responses_background_completed.json"))
    again = make_exchange("/v1/responses/resp_bg1", method="GET")
    await h.call(again, compact("responses_background_completed.json"))
    queued, done, repeat = h.sink.records
    assert (queued.usage_source, queued.cost_usd, queued.response_id) == (
        "none",
        Decimal(0),
        "resp_bg1",
    )
    assert (done.usage_source, done.input_tokens, done.model) == (
        "reported",
        328,
        "gpt-4.1-2025-04-14",
    )
    assert done.cost_usd is not None and done.cost_usd > 0
    assert (repeat.usage_source, repeat.input_tokens, repeat.cost_usd) == ("none", 0, Decimal(0))
    assert repeat.price_ref == "already_metered:response"
    assert h.estimated == []


async def test_stored_chat_completion_retrieval_is_not_billed_twice(encodings: Encodings) -> None:
    h = Harness(encodings)
    post = make_exchange("/v1/chat/completions", body={**CHAT, "store": True})
    await h.call(post, compact("chat_completion_minimal.json"))
    get = make_exchange("/v1/chat/completions/chatcmpl-abc123", method="GET")
    await h.call(get, compact("chat_completion_minimal.json"))
    billed, retrieved = h.sink.records
    assert billed.input_tokens == 9 and retrieved.input_tokens == 0
    assert retrieved.price_ref == "already_metered:chat.completion"


async def test_responses_stream_tools_become_units(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/responses", body={"model": "gpt-5.4", "input": "hi", "stream": True})
    await h.call(ex, raw("responses_stream_completed.sse"), content_type=SSE, pieces=[77, 1234])
    r = h.record
    assert not ex.usage_injected  # Responses streams always carry usage
    assert r.units == {"web_search_calls": Decimal(1), "containers": Decimal(1)}
    assert (r.model, r.service_tier, r.reasoning_tokens) == ("gpt-5.4-2026-03-05", "flex", 64)


async def test_failed_responses_stream_is_estimated(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange(
        "/v1/responses", body={"model": "gpt-5.4", "input": "Tell me a story", "stream": True}
    )
    await h.call(ex, raw("responses_stream_failed.sse"), content_type=SSE)
    r = h.record
    assert (r.usage_source, r.estimate_reason) == ("estimated", "response_failed")
    assert r.input_tokens > 0 and r.output_tokens > 0
    assert r.units == {"web_search_calls": Decimal(1), "containers": Decimal(1)}


async def test_free_endpoints_cost_zero(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/moderations", body={"model": "omni-moderation-latest", "input": "x"})
    await h.call(ex, compact("moderation.json"))
    ex2 = make_exchange("/v1/responses/input_tokens", body={"model": "gpt-5.4", "input": "x"})
    await h.call(ex2, compact("responses_input_tokens.json"))
    assert [(r.cost_usd, r.usage_source) for r in h.sink.records] == [(Decimal(0), "none")] * 2
    assert h.pricer.calls == []


async def test_speech_bills_characters_from_the_request(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange(
        "/v1/audio/speech", body={"model": "tts-1-hd", "input": "Hello there", "voice": "alloy"}
    )
    await h.call(ex, b"\xff\xf3binary-mp3", content_type="audio/mpeg")
    r = h.record
    assert (r.units, r.usage_source, r.model) == (
        {"characters": Decimal(11)},
        "reported",
        "tts-1-hd",
    )


async def test_dalle_images_are_units_from_the_request(encodings: Encodings) -> None:
    h = Harness(encodings)
    body = {"model": "dall-e-3", "prompt": "a cat", "quality": "hd", "size": "1024x1792"}
    ex = make_exchange("/v1/images/generations", body=body)
    await h.call(ex, compact("images_dalle.json"))
    assert h.record.units == {"image:hd:1024x1792": Decimal(1)}


async def test_multipart_transcription_reads_model_from_the_form(encodings: Encodings) -> None:
    h = Harness(encodings)
    boundary = "----b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + b"RIFF\x00\x01--fake"
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o-transcribe'
            f"\r\n--{boundary}--\r\n"
        ).encode()
    )
    ex = make_exchange(
        "/v1/audio/transcriptions",
        raw_body=form,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    await h.call(ex, compact("transcription_tokens.json"))
    r = h.record
    assert (r.model, r.input_tokens, r.audio_input_tokens, r.output_tokens) == (
        "gpt-4o-transcribe",
        14,
        4,
        101,
    )


async def test_embeddings_token_arrays(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange(
        "/v1/embeddings", body={"model": "text-embedding-3-small", "input": [[1, 2, 3]]}
    )
    await h.call(ex, compact("embeddings_base64.json"))
    assert (h.record.input_tokens, h.record.output_tokens) == (8, 0)


async def test_a_failing_pricer_or_sink_never_loses_the_record(encodings: Encodings) -> None:
    h = Harness(encodings, pricer=RaisingPricer(), sinks=[RaisingSink()])
    ex = make_exchange("/v1/chat/completions", body=CHAT)
    await h.call(ex, compact("chat_completion_minimal.json"))
    r = h.record
    assert (r.cost_usd, r.unpriced_reason, r.input_tokens) == (None, "pricing_error", 9)
    assert [stage for stage, _ in h.errors] == ["price", "sink"]


async def test_a_broken_tap_still_gives_a_record(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", body=CHAT)
    await h.meter.on_request(ex)
    respond(ex)
    plan = h.meter.on_response(ex)

    class Boom:
        def feed(self, chunk: bytes) -> None: ...

        def finish(self, *, complete: bool) -> Any:
            raise ValueError("boom")

    plan.tap = Boom()
    h.meter.on_finish(ex, plan)
    assert h.record.usage_source == "estimated" and h.errors[0][0] == "tap"


async def test_stages_attribute_refuse_and_see_records(encodings: Encodings) -> None:
    stage = RecordingStage()
    h = Harness(encodings, stages=[stage])
    ex = make_exchange("/v1/chat/completions", body=CHAT)
    await h.call(ex, compact("chat_completion_minimal.json"))
    assert h.record.team == "search" and stage.records == [h.record]

    refusing = Harness(encodings, stages=[RecordingStage(refuse=True)])
    ex2 = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    refusal = await refusing.meter.on_request(ex2)
    assert refusal is not None and refusal.status == 429
    assert not ex2.usage_injected


async def test_invalid_json_request_is_reported_and_the_call_goes_on(encodings: Encodings) -> None:
    h = Harness(encodings)
    ex = make_exchange("/v1/chat/completions", raw_body=b"{not json")
    assert await h.meter.on_request(ex) is None
    assert ex.upstream_body == b"{not json" and h.errors[0][0] == "request"


class SlowDedupe:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    async def first_time(self, kind: str, id: str) -> bool:
        await asyncio.sleep(0)
        fresh = (kind, id) not in self.seen
        self.seen.add((kind, id))
        return fresh


async def test_async_dedupe_store_finishes_records_in_tasks(encodings: Encodings) -> None:
    h = Harness(encodings, dedupe=SlowDedupe())
    for _ in range(2):
        ex = make_exchange("/v1/responses/resp_bg1", method="GET")
        await h.call(ex, compact("responses_background_completed.json"))
    await h.meter.drain()
    assert sorted(r.input_tokens for r in h.sink.records) == [0, 328]


# --- issue 11: long estimates leave the event loop; oversized streams are estimated --------------


async def test_a_long_estimate_runs_off_the_loop_and_is_recorded_after(
    encodings: Encodings,
) -> None:
    h = Harness(encodings)
    prompt = "word " * 200_000  # 1 MB of prompt: ~0.1 s of tiktoken, never on the loop
    exchange = make_exchange(
        "/v1/chat/completions", body={**CHAT, "messages": [{"role": "user", "content": prompt}]}
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await h.call(exchange, b"", outcome="client_disconnect")
    assert len(h.sink) == 0  # not estimated inline
    await h.meter.drain()
    task.cancel()
    record = h.record
    assert record.usage_source == "estimated" and record.estimate_reason == "client_disconnect"
    assert record.input_tokens > 190_000
    assert ticks > 1  # the loop kept running while the thread counted


async def test_a_stream_with_an_oversized_event_is_estimated(encodings: Encodings) -> None:
    h = Harness(encodings, max_event_bytes=1024)
    exchange = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    data = raw("chat_stream_plain.sse")  # upstream sent no usage chunk
    first = data.index(b"\n\n") + 2
    giant = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 5000 + b'"}}]}\n\n'
    stream = data[:first] + giant + data[first:]
    sent = await h.call(exchange, stream, content_type=SSE, pieces=list(range(1, len(stream), 700)))
    assert sent == stream  # forwarded untouched, as it arrived
    await h.meter.drain()
    assert h.record.usage_source == "estimated"
    assert h.record.estimate_reason == "oversized_event"
    assert h.record.input_tokens > 0


# --- issue 16: encodings are built lazily, by the first estimate, never on the event loop --------


async def test_the_first_estimate_builds_its_encoding_in_a_worker_thread(
    encodings: Encodings,
) -> None:
    import threading

    built_on: list[tuple[str, bool]] = []

    def loader(name: str) -> Any:
        built_on.append((name, threading.current_thread() is threading.main_thread()))
        return encodings.get(name)

    lazy = Encodings(loader=loader)
    assert lazy.loaded() == ()
    h = Harness(lazy)
    ex = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    await h.call(ex, raw("chat_stream_cut.sse"), content_type=SSE, outcome="client_disconnect")
    assert len(h.sink) == 0  # not estimated inline: the encoding was not loaded
    await h.meter.drain()
    assert built_on == [("o200k_base", False)]  # built once, off the loop's thread
    r = h.record
    assert (r.usage_source, r.input_tokens, r.output_tokens) == ("estimated", 13, 5)
    # Once loaded, a short estimate is inline again and the encoding is not built twice.
    h2 = Harness(lazy)
    ex2 = make_exchange("/v1/chat/completions", body={**CHAT, "stream": True})
    await h2.call(ex2, raw("chat_stream_cut.sse"), content_type=SSE, outcome="client_disconnect")
    assert len(h2.sink) == 1 and h2.record.input_tokens == 13
    assert built_on == [("o200k_base", False)]
