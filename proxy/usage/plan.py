"""Which tap reads which response (pure): by endpoint, method, path shape and content type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pricing.usage import Usage
from proxy.http.observation import NullTap, Observation, Tap
from proxy.usage.extract import speech_characters
from proxy.usage.readers import (
    Reader,
    batch_reader,
    chat_reader,
    compact_reader,
    embeddings_reader,
    free_reader,
    images_reader,
    responses_reader,
    transcription_reader,
)
from proxy.usage.realtime import SessionUsageTap
from proxy.usage.taps import (
    ChatStreamTap,
    FixedTap,
    JsonBodyTap,
    ResponsesStreamTap,
    UsageEventStreamTap,
)

# tts-1 / tts-1-hd bill per character of ``input``; newer speech models bill tokens.
_CHARACTER_BILLED = ("tts-1",)


# Built once per call: a plain slotted class, not frozen (a frozen dataclass sets every field through
# object.__setattr__, several times slower to construct); treat it as immutable.
@dataclass(slots=True)
class Call:
    """What ``choose_tap`` needs to know about one call."""

    endpoint: str
    method: str
    path: str
    status: int | None
    content_type: str  # the response's
    request: Mapping[str, Any]  # request JSON or multipart fields ({} when neither)
    model_requested: str | None = None
    max_json_bytes: int = 64 * 1024 * 1024


def _segments(path: str) -> list[str]:
    parts = path.split("/")
    if parts[0] == "" and "" not in parts[1:]:  # the usual "/v1/a/b": no empty segment
        return parts[2:]
    return [part for part in path.split("/") if part][1:]  # drop "v1"


# The readers are pure: build each variant once, not per call.
_CHAT_READERS: Final = {
    (retrieval, stored): chat_reader(retrieval=retrieval, stored=stored)
    for retrieval in (False, True)
    for stored in (False, True)
}
_RESPONSES_READERS: Final = {
    (retrieval, stored): responses_reader(retrieval=retrieval, stored=stored)
    for retrieval in (False, True)
    for stored in (False, True)
}


def _is_sse(content_type: str) -> bool:
    return content_type.lower().startswith("text/event-stream")


def _is_json(content_type: str) -> bool:
    ct = content_type.lower()
    return ct.startswith("application/json") or ("+json" in ct and ct.startswith("application/"))


def _stored_response(request: Mapping[str, Any]) -> bool:
    return request.get("store") is not False or request.get("background") is True


def choose_tap(call: Call) -> Tap:
    if call.status is None or call.status >= 400:
        return NullTap()
    if call.status == 101:  # a WebSocket session: one record, the sum of its responses
        if call.endpoint in ("realtime", "responses"):
            return SessionUsageTap(model=call.model_requested)
        return NullTap()
    sse = _is_sse(call.content_type)
    segs = _segments(call.path)
    method = call.method.upper()
    req = call.request
    model = call.model_requested
    if call.endpoint in ("chat.completions", "completions"):
        if method == "POST" and len(segs) == (2 if call.endpoint == "chat.completions" else 1):
            if sse:
                return ChatStreamTap()
            return _json(call, _CHAT_READERS[False, req.get("store") is True])
        if method == "GET" and call.endpoint == "chat.completions" and len(segs) == 3:
            return _json(call, _CHAT_READERS[True, True])
        return NullTap()
    if call.endpoint == "responses":
        return _responses_tap(call, segs, method, sse)
    if call.endpoint == "embeddings" and method == "POST":
        return _json(call, embeddings_reader)
    if call.endpoint in ("images.generations", "images.edits", "images.variations"):
        if method != "POST":
            return NullTap()
        if sse:
            return UsageEventStreamTap(model=model)
        return _json(call, images_reader({**req, "model": model} if model else req))
    if call.endpoint in ("audio.transcriptions", "audio.translations") and method == "POST":
        if sse:
            return UsageEventStreamTap(model=model)
        if _is_json(call.content_type):
            return _json(call, transcription_reader(model))
        return FixedTap(lambda complete: Observation(usage=None, source="none", model=model))
    if call.endpoint == "audio.speech" and method == "POST":
        if sse:
            return UsageEventStreamTap(model=model)
        return FixedTap(lambda complete: _speech(req, model))
    if call.endpoint == "batches" and len(segs) >= 2:
        return _json(call, batch_reader)
    if call.endpoint == "moderations":
        return _json(call, free_reader)
    return NullTap()


def _responses_tap(call: Call, segs: list[str], method: str, sse: bool) -> Tap:
    req = call.request
    if method == "POST" and len(segs) == 1:
        if sse:
            return ResponsesStreamTap(
                dedupe=_stored_response(req), fallback_model=call.model_requested
            )
        return _json(call, _RESPONSES_READERS[False, _stored_response(req)])
    if method == "POST" and segs[1:] == ["compact"]:
        return _json(call, compact_reader(call.model_requested))
    if method == "POST" and segs[1:] == ["input_tokens"]:
        return _json(call, free_reader)
    retrieval = (method == "GET" and len(segs) == 2) or (
        method == "POST" and len(segs) == 3 and segs[2] == "cancel"
    )
    if retrieval:
        if sse:
            return ResponsesStreamTap(dedupe=True)
        return _json(call, _RESPONSES_READERS[True, True])
    return NullTap()


def _json(call: Call, reader: Reader) -> Tap:
    if not _is_json(call.content_type):
        return NullTap()
    return JsonBodyTap(reader, max_bytes=call.max_json_bytes)


def _speech(request: Mapping[str, Any], model: str | None) -> Observation:
    units = speech_characters(request)
    if model is None or model.startswith(_CHARACTER_BILLED):
        return Observation(usage=Usage(units=units), source="reported", model=model or "tts-1")
    # gpt-4o-mini-tts in binary mode: no usage anywhere; estimate from the input text.
    return Observation(
        usage=None,
        source="none",
        model=model,
        usage_expected=True,
        estimate_reason="no_usage",
    )
