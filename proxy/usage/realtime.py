"""Usage of one WebSocket session (Realtime, Responses WebSocket mode): the sum of its responses (pure).

One forwarded WebSocket is one call, so one ledger record: its usage is the SUM of every finished
response's ``usage`` (transcribed from the OpenAI reference notes §3.8, Realtime server event
``response.done``)::

    {"type": "response.done", "response": {"id": "resp_…", "usage": {
        "input_tokens": 132, "output_tokens": 121,
        "input_token_details": {"text_tokens": 119, "audio_tokens": 13, "image_tokens": 0,
            "cached_tokens": 64,
            "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0}},
        "output_token_details": {"text_tokens": 30, "audio_tokens": 91}}}}

``cached_tokens_details.{audio,image}_tokens`` become the units ``cached_audio_input_tokens`` /
``cached_image_input_tokens`` (splits of ``cached_input_tokens``, priced at their own cached rates).
Responses WebSocket mode sends the Responses stream events; ``response.completed`` /
``response.incomplete`` / ``response.failed`` carry the Response object and its usage.

Model: the last finished response that names one (Responses mode), else the session's
``session.model`` (``session.created`` / ``session.updated``), else the URL's ``?model=``.
Response id: the FIRST finished response's id (stable from the moment it is known, also when the
session is cut later). A session cut mid-response keeps the finished responses' usage exactly
(``reported``); the unfinished response is not estimated (nothing is known about it yet).

Hot path: audio deltas are large and frequent. A message is JSON-parsed only when it can be one of
the few events read here: OpenAI writes ``"type"`` as the first key, so a prefix check names the
event without scanning the message; any other layout falls back to substring tests on the raw
bytes (a quoted event name cannot occur inside a JSON string, where quotes are escaped).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from pricing.usage import Usage
from proxy.http.observation import Observation
from proxy.usage.extract import InvalidUsage, obj, responses_usage, tool_units

_TERMINAL: Final = frozenset(
    {b"response.done", b"response.completed", b"response.incomplete", b"response.failed"}
)
_SESSION: Final = frozenset({b"session.created", b"session.updated"})
_WANTED: Final = _TERMINAL | _SESSION
_QUOTED: Final = tuple(b'"' + name + b'"' for name in sorted(_WANTED))
_PREFIX: Final = b'{"type":"'
_MAX_TYPE: Final = 96  # longest event name looked for at the prefix
_CACHED_SPLITS: Final = (
    ("audio_tokens", "cached_audio_input_tokens"),
    ("image_tokens", "cached_image_input_tokens"),
)


def query_model(query_string: str) -> str | None:
    """``model`` from a raw query string (``/v1/realtime?model=gpt-realtime``)."""
    if "model=" not in query_string:
        return None
    values = parse_qs(query_string).get("model")
    return values[-1] if values and values[-1] else None


def is_candidate(message: bytes) -> bool:
    """Can this raw message be an event this tap reads? Cheap: no JSON parsing."""
    if message.startswith(_PREFIX):
        end = message.find(b'"', len(_PREFIX), len(_PREFIX) + _MAX_TYPE)
        if end > 0:
            return message[len(_PREFIX) : end] in _WANTED
    return any(quoted in message for quoted in _QUOTED)


def realtime_usage(usage: Mapping[str, Any]) -> Usage:
    """One response's usage (Realtime or Responses keys) with the cached-audio/image splits."""
    result = responses_usage(usage)
    details = obj(usage.get("input_token_details")) or obj(usage.get("input_tokens_details"))
    cached = obj(details.get("cached_tokens_details"))
    units: dict[str, Decimal] = {}
    for key, unit in _CACHED_SPLITS:
        value = cached.get(key)
        if type(value) is int and value > 0:
            units[unit] = Decimal(value)
    return result.with_units(**units) if units else result


class SessionUsageTap:
    """Fed one complete upstream -> client WebSocket message at a time."""

    __slots__ = (
        "_first_id",
        "_invalid",
        "_model",
        "_request_model",
        "_responses",
        "_service_tier",
        "_session_model",
        "_usage",
    )

    def __init__(self, *, model: str | None = None) -> None:
        self._request_model = model
        self._session_model: str | None = None
        self._model: str | None = None  # named by a finished response (Responses mode)
        self._service_tier: str | None = None
        self._first_id: str | None = None
        self._usage: Usage | None = None
        self._responses = 0
        self._invalid = 0

    def feed(self, chunk: bytes) -> None:
        if not is_candidate(chunk):
            return
        try:
            event = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        name = kind.encode()
        if name in _SESSION:
            model = obj(event.get("session")).get("model")
            if isinstance(model, str) and model:
                self._session_model = model
        elif name in _TERMINAL:
            response = event.get("response")
            if isinstance(response, dict):
                self._add(response)

    def _add(self, response: Mapping[str, Any]) -> None:
        usage = response.get("usage")
        if isinstance(usage, dict):
            try:
                one: Usage | None = realtime_usage(usage)
            except InvalidUsage:
                # Not billable as reported; the session's other responses still are. Counted in
                # the record's extra so a reader sees the session is under-metered.
                self._invalid += 1
                one = None
            if one is not None:
                output = response.get("output")
                tools = tool_units(output) if isinstance(output, list) else {}
                if tools:  # built-in tool fees (Responses mode)
                    one = one.with_units(**tools)
                self._usage = one if self._usage is None else self._usage + one
                self._responses += 1
        response_id = response.get("id")
        if self._first_id is None and isinstance(response_id, str) and response_id:
            self._first_id = response_id
        model = response.get("model")
        if isinstance(model, str) and model:
            self._model = model
        tier = response.get("service_tier")
        if isinstance(tier, str) and tier:
            self._service_tier = tier

    def finish(self, *, complete: bool) -> Observation:
        model = self._model or self._session_model or self._request_model
        extra = {"responses": str(self._responses)}
        if self._invalid:
            extra["invalid_usage_responses"] = str(self._invalid)
        if self._usage is None:
            if self._invalid:
                return Observation(
                    usage=None,
                    source="none",
                    model=model,
                    extra=extra,
                    estimate_reason="invalid_usage",
                    usage_expected=True,
                )
            return Observation(usage=None, source="none", model=model, extra=extra)
        return Observation(
            usage=self._usage,
            source="reported",
            model=model,
            service_tier=self._service_tier,
            response_id=self._first_id,
            extra=extra,
        )
