"""Pure usage-path throughput: SSE taps, the usage-chunk stripper, the JSON tap, the whole meter.

``run()`` returns microseconds per unit (lower is better). Synthetic but realistic payloads: a chat
stream of 300 content chunks + the injected usage chunk, fed in 1-event chunks as OpenAI sends them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import orjson

from pricing.cost import Cost
from pricing.usage import Usage
from proxy.http.endpoints import classify
from proxy.http.exchange import Exchange
from proxy.usage.dedupe import MemoryDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from proxy.usage.readers import chat_reader
from proxy.usage.rewrite import UsageChunkStripper
from proxy.usage.sinks import MemorySink
from proxy.usage.taps import ChatStreamTap, JsonBodyTap, ResponsesStreamTap

_BASE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}
_CHUNKS = 300


def chat_stream_events() -> list[bytes]:
    events = [
        b"data: "
        + orjson.dumps(
            {
                **_BASE,
                "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}],
                "usage": None,
            }
        )
        + b"\n\n"
        for i in range(_CHUNKS)
    ]
    usage = {"prompt_tokens": 50, "completion_tokens": _CHUNKS, "total_tokens": 50 + _CHUNKS}
    events.append(b"data: " + orjson.dumps({**_BASE, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def responses_stream_events() -> list[bytes]:
    events = []
    for i in range(_CHUNKS):
        body = {
            "type": "response.output_text.delta",
            "sequence_number": i,
            "item_id": "msg_1",
            "delta": f" w{i}",
        }
        events.append(b"event: response.output_text.delta\ndata: " + orjson.dumps(body) + b"\n\n")
    final = {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "status": "completed",
            "model": "gpt-5.4",
            "output": [],
            "usage": {
                "input_tokens": 50,
                "output_tokens": _CHUNKS,
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        },
    }
    events.append(b"event: response.completed\ndata: " + orjson.dumps(final) + b"\n\n")
    return events


CHAT_JSON = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! " * 40},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 80,
            "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
)


def _per_call_us(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best * 1e6


class _FlatPricer:
    def price(self, usage: Usage, model: str | None, tier: str | None, at: datetime) -> Cost:
        total = (
            Decimal(usage.input_tokens) * Decimal("0.15")
            + Decimal(usage.output_tokens) * Decimal("0.6")
        ) / Decimal(1_000_000)
        return Cost(total=total, price_ref="bench")


def _meter_call_us(repeat: int) -> float:
    meter = UsageMeter(
        pricer=_FlatPricer(),
        sinks=[MemorySink(max_records=16)],
        encodings=Encodings(),  # never loaded: every call below reports usage
        dedupe=MemoryDedupe(),
    )
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})

    def one() -> None:
        ex = Exchange(
            method="POST",
            path="/v1/chat/completions",
            query_string="",
            endpoint=classify("/v1/chat/completions"),
            request_headers={},
            content_type="application/json",
            request_body=body,
            upstream_body=body,
        )
        coro = meter.on_request(ex)  # no stage awaits: run it without loop overhead
        with contextlib.suppress(StopIteration):
            coro.send(None)
        ex.status_code = 200
        ex.response_content_type = "application/json"
        plan = meter.on_response(ex)
        plan.tap.feed(CHAT_JSON)
        meter.on_finish(ex, plan)

    return _per_call_us(one, repeat)


def run() -> dict[str, float]:
    chat = chat_stream_events()
    responses = responses_stream_events()
    n_chat = len(chat)

    def chat_tap() -> object:
        tap = ChatStreamTap()
        for event in chat:
            tap.feed(event)
        return tap.finish(complete=True)

    def responses_tap() -> object:
        tap = ResponsesStreamTap(dedupe=False)
        for event in responses:
            tap.feed(event)
        return tap.finish(complete=True)

    def stripper() -> object:
        rewriter = UsageChunkStripper()
        for event in chat:
            rewriter.feed(event)
        return rewriter.flush()

    def json_tap() -> object:
        tap = JsonBodyTap(chat_reader(retrieval=False, stored=False))
        tap.feed(CHAT_JSON)
        return tap.finish(complete=True)

    chat_us = _per_call_us(chat_tap, 20)
    responses_us = _per_call_us(responses_tap, 20)
    strip_us = _per_call_us(stripper, 20)
    return {
        # Machine-speed reference: one empty Python call (≈0.05 us on an idle modern core).
        "calibration_empty_call_us": _per_call_us(lambda: None, 100_000),
        "chat_sse_tap_us_per_event": chat_us / n_chat,
        "chat_sse_tap_us_per_stream_302_events": chat_us,
        "responses_sse_tap_us_per_event": responses_us / len(responses),
        "usage_chunk_stripper_us_per_event": strip_us / n_chat,
        "json_tap_us_per_chat_body": _per_call_us(json_tap, 2000),
        "meter_us_per_json_chat_call_all_hooks": _meter_call_us(2000),
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:52s} {value:12.3f}")
