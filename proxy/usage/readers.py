"""Whole-body readers: one parsed JSON response (+ the request) -> ``Observation`` (pure).

Each reader knows one endpoint's shape (see ``proxy.usage.extract`` for the usage objects). A reader
gets ``body=None`` when the body was not JSON or could not be parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pricing.usage import Usage
from proxy.http.observation import Observation
from proxy.usage.extract import (
    ToolCounter,
    completion_usage,
    dalle_image_units,
    embeddings_usage,
    image_usage,
    responses_usage,
    transcription_usage,
)

Reader = Callable[[Mapping[str, Any] | None], Observation]

# Responses in these states will not change any more; their usage is final.
RESPONSE_TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
BATCH_TERMINAL = frozenset({"completed", "cancelled", "expired", "failed"})


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _none(source_expected: bool) -> Observation:
    return Observation(usage=None, source="none", usage_expected=source_expected)


def chat_reader(*, retrieval: bool, stored: bool) -> Reader:
    """Chat completions and legacy completions (``CompletionUsage``)."""

    def read(body: Mapping[str, Any] | None) -> Observation:
        if body is None:
            return _none(not retrieval)
        usage = body.get("usage")
        response_id = _str(body.get("id"))
        dedupe = response_id if (retrieval or stored) and response_id else None
        return Observation(
            usage=completion_usage(usage) if isinstance(usage, dict) else None,
            source="reported" if isinstance(usage, dict) else "none",
            model=_str(body.get("model")),
            service_tier=_str(body.get("service_tier")),
            response_id=response_id,
            dedupe_id=dedupe,
            dedupe_kind="chat.completion" if dedupe else None,
            usage_expected=not retrieval,
        )

    return read


def response_observation(
    body: Mapping[str, Any],
    *,
    dedupe: bool,
    tools: ToolCounter | None = None,
    fallback_model: str | None = None,
) -> Observation:
    """A Responses ``Response`` object (POST body, GET body or a stream's terminal event)."""
    counter = tools if tools is not None else ToolCounter()
    counter.add_all(body.get("output"))
    units = counter.units()
    usage = body.get("usage")
    status = _str(body.get("status"))
    response_id = _str(body.get("id"))
    extra: dict[str, str] = {"status": status} if status else {}
    if isinstance(usage, dict):
        result: Usage | None = responses_usage(usage)
        if units:
            result = Usage(units=units) + responses_usage(usage)
        source = "reported"
    else:
        result = Usage(units=units) if units else None
        source = "none"
    terminal = status in RESPONSE_TERMINAL or status is None
    return Observation(
        usage=result,
        source="reported" if source == "reported" else "none",
        model=_str(body.get("model")) or fallback_model,
        service_tier=_str(body.get("service_tier")),
        response_id=response_id,
        dedupe_id=response_id if dedupe and response_id else None,
        dedupe_kind="response" if dedupe and response_id else None,
        extra=extra,
        # queued / in_progress (background) and cancelled calls are not estimated.
        usage_expected=terminal and status != "cancelled",
    )


def responses_reader(*, retrieval: bool, stored: bool) -> Reader:
    def read(body: Mapping[str, Any] | None) -> Observation:
        if body is None:
            return _none(not retrieval)
        obs = response_observation(body, dedupe=retrieval or stored)
        if retrieval and obs.usage is None:
            return Observation(
                usage=None,
                source="none",
                model=obs.model,
                service_tier=obs.service_tier,
                response_id=obs.response_id,
                extra=obs.extra,
            )
        return obs

    return read


def compact_reader(model: str | None) -> Reader:
    """``POST /v1/responses/compact``: billable; the object has no ``model`` (use the request's)."""

    def read(body: Mapping[str, Any] | None) -> Observation:
        if body is None:
            return _none(True)
        usage = body.get("usage")
        return Observation(
            usage=responses_usage(usage) if isinstance(usage, dict) else None,
            source="reported" if isinstance(usage, dict) else "none",
            model=model,
            response_id=_str(body.get("id")),
            usage_expected=True,
        )

    return read


def embeddings_reader(body: Mapping[str, Any] | None) -> Observation:
    if body is None:
        return _none(True)
    usage = body.get("usage")
    return Observation(
        usage=embeddings_usage(usage) if isinstance(usage, dict) else None,
        source="reported" if isinstance(usage, dict) else "none",
        model=_str(body.get("model")),
        usage_expected=True,
    )


def images_reader(request: Mapping[str, Any]) -> Reader:
    """gpt-image models report token usage; DALL·E reports none: ``image:<quality>:<size>`` x n."""
    model = _str(request.get("model"))

    def read(body: Mapping[str, Any] | None) -> Observation:
        usage = body.get("usage") if body is not None else None
        if isinstance(usage, dict):
            return Observation(usage=image_usage(usage), source="reported", model=model)
        if body is None:
            return _none(True)
        data = body.get("data")
        count = len(data) if isinstance(data, list) else None
        units = dalle_image_units(request, count)
        dalle = model is None or model.startswith("dall-e")
        return Observation(
            usage=Usage(units=units),
            source="reported" if dalle else "estimated",
            model=model or "dall-e-2",
            estimate_reason=None if dalle else "no_usage",
        )

    return read


def transcription_reader(model: str | None) -> Reader:
    def read(body: Mapping[str, Any] | None) -> Observation:
        usage = body.get("usage") if body is not None else None
        if isinstance(usage, dict):
            return Observation(usage=transcription_usage(usage), source="reported", model=model)
        duration = body.get("duration") if body is not None else None
        if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
            seconds = Decimal(str(duration))
            return Observation(
                usage=Usage(units={"audio_seconds": seconds}), source="reported", model=model
            )
        return Observation(usage=None, source="none", model=model)

    return read


def batch_reader(body: Mapping[str, Any] | None) -> Observation:
    """``GET /v1/batches/{id}``: aggregate usage once the batch is terminal, metered once per id."""
    if body is None:
        return _none(False)
    status = _str(body.get("status"))
    usage = body.get("usage")
    batch_id = _str(body.get("id"))
    if status in BATCH_TERMINAL and isinstance(usage, dict) and batch_id:
        return Observation(
            usage=responses_usage(usage),
            source="reported",
            model=_str(body.get("model")),
            service_tier="batch",
            response_id=batch_id,
            dedupe_id=batch_id,
            dedupe_kind="batch",
        )
    return Observation(usage=None, source="none", response_id=batch_id)


def free_reader(body: Mapping[str, Any] | None) -> Observation:
    """Moderations, ``responses/input_tokens`` and anything else that is not billed."""
    if body is None:
        return _none(False)
    return Observation(
        usage=None,
        source="none",
        model=_str(body.get("model")),
        response_id=_str(body.get("id")),
    )
