"""CostCeiling: the most a call can cost, from its request alone (budget reservations)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from pricing.usage import Usage
from proxy.http.exchange import Exchange
from proxy.usage.ceiling import DEFAULT_MAX_OUTPUT_TOKENS, CostCeiling, request_bytes
from proxy.usage.encodings import Encodings
from proxy.usage.estimate import count_messages
from tests.support.usage_fakes import FakePricer

MILLION = Decimal(1_000_000)


def exchange_for(
    body: dict[str, Any] | None,
    endpoint: str = "chat.completions",
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    tier: str | None = None,
) -> Exchange:
    data = raw if raw is not None else orjson.dumps(body) if body is not None else None
    exchange = Exchange(
        method="POST",
        path="/v1/x",
        query_string="",
        endpoint=endpoint,
        request_headers=CIMultiDict(headers or {}),
        request_body=data,
        request_json=body,
        model_requested=(body or {}).get("model") if isinstance(body, dict) else None,
        service_tier_requested=tier,
    )
    return exchange


def price(input_tokens: int, output_tokens: int) -> Decimal:
    """FakePricer: 1.00 in / 4.00 out per 1M tokens."""
    return (Decimal(input_tokens) + Decimal(output_tokens) * 4) / MILLION


CEILING = CostCeiling(FakePricer(), max_output_tokens=100_000)


def test_input_bounded_by_body_bytes_output_by_the_request_cap() -> None:
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        body = {
            "model": "gpt-4o-mini",
            field: 1000,
            "messages": [{"role": "user", "content": "hi"}],
        }
        exchange = exchange_for(body)
        size = len(orjson.dumps(body))
        assert CEILING.usage(exchange) == Usage(input_tokens=size, output_tokens=1000)
        assert CEILING(exchange) == price(size, 1000)


def test_no_cap_means_the_model_ceiling_and_a_cap_above_it_is_clamped() -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": []}
    assert CEILING.usage(exchange_for(body)).output_tokens == 100_000
    body["max_tokens"] = 10**15  # hostile: cannot reserve more than any model can produce
    assert CEILING.usage(exchange_for(body)).output_tokens == 100_000
    per_model = CostCeiling(FakePricer(), model_max_output_tokens={"gpt-4o-mini": 16_384})
    assert per_model.usage(exchange_for({"model": "gpt-4o-mini"})).output_tokens == 16_384
    assert per_model.usage(exchange_for({"model": "gpt-5"})).output_tokens == (
        DEFAULT_MAX_OUTPUT_TOKENS
    )


def test_choices_multiply_the_output_and_are_bounded() -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "n": 3}
    assert CEILING.usage(exchange_for(body)).output_tokens == 30
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "n": 2, "best_of": 5}
    assert CEILING.usage(exchange_for(body, "completions")).output_tokens == 50
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "n": 10**9}
    assert CEILING.usage(exchange_for(body)).output_tokens == 10 * 128


def test_worst_values_of_the_cap_fall_back_to_the_ceiling() -> None:
    for bad in (0, -1000, "1000", 1.5, True, None, [5], {"a": 1}):
        body = {"model": "gpt-4o-mini", "max_tokens": bad, "n": bad}
        assert CEILING.usage(exchange_for(body)).output_tokens == 100_000, bad


def test_non_generating_endpoints_reserve_input_only() -> None:
    body = {"model": "text-embedding-3-small", "input": "x" * 1000, "max_tokens": 5}
    usage = CEILING.usage(exchange_for(body, "embeddings"))
    assert usage.output_tokens == 0
    assert usage.input_tokens == len(orjson.dumps(body))


def test_images_and_speech_reserve_what_the_request_asks_for() -> None:
    body = {"model": "dall-e-3", "prompt": "a cat", "n": 2, "size": "1024x1792", "quality": "hd"}
    usage = CEILING.usage(exchange_for(body, "images.generations"))
    assert usage.units == {"image:hd:1024x1792": Decimal(2)}
    speech = {"model": "tts-1", "input": "hello world"}
    assert CEILING.usage(exchange_for(speech, "audio.speech")).units == {"characters": Decimal(11)}


def test_unknown_model_or_no_model_reserves_zero() -> None:
    assert CEILING(exchange_for({"model": "llama-3", "max_tokens": 10})) == 0
    assert CEILING(exchange_for({"messages": []})) == 0
    assert CEILING(exchange_for(None, raw=b"\xff\xfe not json")) == 0


def test_unknown_tier_falls_back_to_the_default_tier_price() -> None:
    class TierPricer(FakePricer):
        def price(self, usage: Usage, model: str | None, tier: str | None, at: Any) -> Any:
            cost = super().price(usage, model, tier, at)
            if tier not in (None, "priority", "flex"):
                return type(cost)(total=None, price_ref=None, unpriced_reason="tier")
            return cost

    ceiling = CostCeiling(TierPricer(), max_output_tokens=10)
    exchange = exchange_for({"model": "gpt-4o-mini"}, tier="made-up")
    assert ceiling(exchange) == price(len(exchange.request_body or b""), 10)


def test_streamed_or_multipart_bodies_use_content_length() -> None:
    exchange = exchange_for(None, "audio.transcriptions", headers={"Content-Length": "123456"})
    exchange.request_body = None
    assert request_bytes(exchange) == 123456
    for bad in ("-5", "abc", "١٢٣", ""):  # Arabic-Indic digits are digits to str.isdigit
        exchange = exchange_for(None, headers={"Content-Length": bad})
        exchange.request_body = None
        exchange.request_body_head = b"head"
        assert request_bytes(exchange) == 4


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=400)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user", "system", "assistant"]), _text), max_size=6))
def test_request_bytes_bound_the_prompt_tokens(messages: list[tuple[str, str]]) -> None:
    """The claim the reservation rests on: tokens of the prompt <= bytes of the JSON body."""
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": role, "content": text} for role, text in messages],
    }
    encoder = ENCODINGS.for_model("gpt-4o-mini")
    assert count_messages(encoder, body["messages"]) <= len(orjson.dumps(body))


ENCODINGS = Encodings()
