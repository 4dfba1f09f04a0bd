"""The most a call can cost, judged from its request alone (budget reservations, issue 11).

A budgeted call reserves this amount when it is admitted and settles to its real cost when its
record arrives, so a team cannot teach the proxy that calls are cheap and then send a burst of
expensive ones. Cheap and pessimistic, no tokenizer on the request path:

* **input tokens <= request bytes.** The encodings are byte-level BPE: every token covers at least
  one byte of UTF-8 text, and JSON only adds bytes (quotes, keys, escapes), so the body's length
  bounds the tokens of the text it carries (a multipart upload's ``Content-Length`` likewise).
* **output tokens <= the request's cap** (``max_completion_tokens`` / ``max_output_tokens`` /
  ``max_tokens``), else the model's ceiling (``budgets.model_max_output_tokens``, else
  ``budgets.max_output_tokens``), times ``n`` / ``best_of`` choices; only endpoints that generate
  text have output.
* **per-image / per-character endpoints** price what the request asks for (n, size, quality;
  the input's characters), as the meter's own estimate does.

The usage is priced by the real price book at the requested model and tier (long-context rates
apply when the bound crosses their threshold). An unknown model reserves 0: its calls are unpriced
and add nothing to ``spent`` either. What the request only *refers to* is not bounded: images by
URL, files by id, ``previous_response_id`` / ``conversation`` context, built-in tool fees (see
``docs/budgets.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from pricing.cost import Pricer
from pricing.usage import Usage
from proxy.http.exchange import Exchange
from proxy.usage.extract import dalle_image_units, speech_characters
from proxy.usage.form import form_fields

# The largest output of current OpenAI text models (the gpt-5 family: 128,000 tokens).
DEFAULT_MAX_OUTPUT_TOKENS: Final = 128_000
OUTPUT_CAP_FIELDS: Final = ("max_completion_tokens", "max_output_tokens", "max_tokens")
GENERATING: Final = frozenset({"chat.completions", "responses", "completions"})
IMAGE_ENDPOINTS: Final = frozenset({"images.generations", "images.edits", "images.variations"})
MAX_CHOICES: Final = 128  # OpenAI's own bound on n / best_of
_ZERO: Final = Decimal(0)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def request_bytes(exchange: Exchange) -> int:
    """An upper bound on the request's size in bytes (what its input tokens cannot exceed)."""
    if exchange.request_body is not None:
        return len(exchange.request_body)
    length = exchange.request_headers.get("Content-Length")
    if length is not None and length.isascii() and length.strip().isdigit():
        return int(length)
    return len(exchange.request_body_head or b"")


def _request_fields(exchange: Exchange) -> Mapping[str, Any]:
    if exchange.request_json is not None:
        return exchange.request_json
    content_type = exchange.request_headers.get("Content-Type") or exchange.content_type
    head = exchange.request_body_head
    if head and content_type.lower().startswith("multipart/"):
        return dict(form_fields(head, content_type))
    return {}


def _tier(tier: str | None) -> str | None:
    if tier is None or tier == "auto":
        return None
    return "priority" if tier == "fast" else tier


@dataclass(frozen=True, slots=True)
class CostCeiling:
    """``ceiling(exchange)`` -> USD: the most this call can cost (see the module's doc)."""

    pricer: Pricer
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    model_max_output_tokens: Mapping[str, int] = field(default_factory=dict)

    def output_ceiling(self, model: str | None) -> int:
        if model is not None:
            found = self.model_max_output_tokens.get(model)
            if found is not None:
                return found
        return self.max_output_tokens

    def usage(self, exchange: Exchange) -> Usage:
        request = _request_fields(exchange)
        endpoint = exchange.endpoint
        if endpoint in IMAGE_ENDPOINTS:
            return Usage(
                input_tokens=request_bytes(exchange), units=dalle_image_units(request, None)
            )
        if endpoint == "audio.speech":
            return Usage(input_tokens=request_bytes(exchange), units=speech_characters(request))
        output = 0
        if endpoint in GENERATING:
            ceiling = self.output_ceiling(exchange.model_requested)
            cap = next(
                (c for f in OUTPUT_CAP_FIELDS if (c := _positive_int(request.get(f))) is not None),
                None,
            )
            choices = max(
                _positive_int(request.get("n")) or 1, _positive_int(request.get("best_of")) or 1
            )
            output = min(cap or ceiling, ceiling) * min(choices, MAX_CHOICES)
        return Usage(input_tokens=request_bytes(exchange), output_tokens=output)

    def __call__(self, exchange: Exchange) -> Decimal:
        model = exchange.model_requested
        if not model:
            return _ZERO
        usage = self.usage(exchange)
        cost = self.pricer.price(
            usage, model, _tier(exchange.service_tier_requested), exchange.started_at
        )
        if cost.total is None and exchange.service_tier_requested is not None:
            cost = self.pricer.price(usage, model, None, exchange.started_at)
        if cost.total is None and usage.units:
            # e.g. an image model billed by tokens: the per-image units have no price there.
            cost = self.pricer.price(
                Usage(input_tokens=usage.input_tokens), model, None, exchange.started_at
            )
        return cost.total if cost.total is not None else _ZERO
