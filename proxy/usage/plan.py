"""Which tap reads which response (pure): by endpoint, method, path shape and content type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
from proxy.usage.sse import DEFAULT_MAX_EVENT_BYTES
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
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES


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


def is_json(content_type: str) -> bool:
    ct = content_type.lower()
    return ct.startswith("application/json") or ("+json" in ct and ct.startswith("application/"))


def is_mislabelled(content_type: str) -> bool:
    """Neither JSON nor SSE (``text/plain``, ``application/octet-stream``, none): for an endpoint
    that only answers those two, its body decides how it is read."""
    return not _is_sse(content_type) and not is_json(content_type)


_SSE_STARTS: Final = (b"data:", b"event:", b"id:", b"retry:", b":")
_SNIFF_BYTES: Final = 1024


class SniffTap:
    """Reads a 200 body whose Content-Type is wrong the way its first bytes say: ``{`` / ``[`` is
    JSON; an SSE field name is a stream. Anything else goes to the JSON tap, whose reader sees an
    unparsable body (estimated, like a missing usage): never a silent $0 for a priced call."""

    __slots__ = ("_head", "_json", "_sse", "_tap")

    def __init__(self, json: Callable[[], Tap], sse: Callable[[], Tap]) -> None:
        self._json = json
        self._sse = sse
        self._tap: Tap | None = None
        self._head = b""

    def feed(self, chunk: bytes) -> None:
        if self._tap is not None:
            self._tap.feed(chunk)
            return
        self._head += chunk  # only until the first non-blank bytes decide (bounded)
        if self._decide(final=False):
            head, self._head = self._head, b""
            assert self._tap is not None
            self._tap.feed(head)

    def _decide(self, *, final: bool) -> bool:
        start = self._head.lstrip()
        if not start and not final and len(self._head) < _SNIFF_BYTES:
            return False
        if start[:1] in (b"{", b"["):
            self._tap = self._json()
        elif start.startswith(_SSE_STARTS):
            self._tap = self._sse()
        elif not final and len(start) < 6 and any(p.startswith(start) for p in _SSE_STARTS):
            return False  # e.g. "dat": wait for a few more bytes
        else:
            self._tap = self._json()
        return True

    def finish(self, *, complete: bool) -> Observation:
        if self._tap is None:
            self._decide(final=True)
            assert self._tap is not None
            self._tap.feed(self._head)
            self._head = b""
        return self._tap.finish(complete=complete)


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
    events = call.max_event_bytes
    if call.endpoint in ("chat.completions", "completions"):
        if method == "POST" and len(segs) == (2 if call.endpoint == "chat.completions" else 1):
            reader = _CHAT_READERS[False, req.get("store") is True]
            return _either(call, reader, lambda: ChatStreamTap(max_event_bytes=events))
        if method == "GET" and call.endpoint == "chat.completions" and len(segs) == 3:
            return _json(call, _CHAT_READERS[True, True])
        return NullTap()
    if call.endpoint == "responses":
        return _responses_tap(call, segs, method)
    if call.endpoint == "embeddings" and method == "POST":
        return _json(call, embeddings_reader)
    if call.endpoint in ("images.generations", "images.edits", "images.variations"):
        if method != "POST":
            return NullTap()
        reader = images_reader({**req, "model": model} if model else req)
        return _either(
            call, reader, lambda: UsageEventStreamTap(model=model, max_event_bytes=events)
        )
    if call.endpoint in ("audio.transcriptions", "audio.translations") and method == "POST":
        if sse:
            return UsageEventStreamTap(model=model, max_event_bytes=events)
        if is_json(call.content_type):
            return _json(call, transcription_reader(model))
        return FixedTap(lambda complete: Observation(usage=None, source="none", model=model))
    if call.endpoint == "audio.speech" and method == "POST":
        if sse:
            return UsageEventStreamTap(model=model, max_event_bytes=events)
        return FixedTap(lambda complete: _speech(req, model))
    if call.endpoint == "batches" and len(segs) >= 2:
        return _json(call, batch_reader)
    if call.endpoint == "moderations":
        return _json(call, free_reader)
    return NullTap()


def _responses_tap(call: Call, segs: list[str], method: str) -> Tap:
    req = call.request
    events = call.max_event_bytes
    if method == "POST" and len(segs) == 1:
        stored = _stored_response(req)
        return _either(
            call,
            _RESPONSES_READERS[False, stored],
            lambda: ResponsesStreamTap(
                dedupe=stored, fallback_model=call.model_requested, max_event_bytes=events
            ),
        )
    if method == "POST" and segs[1:] == ["compact"]:
        return _json(call, compact_reader(call.model_requested))
    if method == "POST" and segs[1:] == ["input_tokens"]:
        return _json(call, free_reader)
    retrieval = (method == "GET" and len(segs) == 2) or (
        method == "POST" and len(segs) == 3 and segs[2] == "cancel"
    )
    if retrieval:
        return _either(
            call,
            _RESPONSES_READERS[True, True],
            lambda: ResponsesStreamTap(dedupe=True, max_event_bytes=events),
        )
    return NullTap()


def _json(call: Call, reader: Reader) -> Tap:
    """A JSON endpoint's tap. A body labelled SSE is not JSON; any other label (``text/plain``,
    ``application/octet-stream``, none) is read as JSON anyway: the endpoint answers nothing else."""
    if _is_sse(call.content_type):
        return NullTap()
    return JsonBodyTap(reader, max_bytes=call.max_json_bytes)


def _either(call: Call, reader: Reader, stream: Callable[[], Tap]) -> Tap:
    """An endpoint that answers JSON or SSE: by the label when it agrees with the request's
    ``stream`` flag, by the body's first bytes otherwise (a wrong or missing label)."""
    streaming = call.request.get("stream") is True
    if _is_sse(call.content_type) and (streaming or call.method.upper() == "GET"):
        return stream()
    if is_json(call.content_type) and not streaming:
        return JsonBodyTap(reader, max_bytes=call.max_json_bytes)
    return SniffTap(lambda: JsonBodyTap(reader, max_bytes=call.max_json_bytes), stream)


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
