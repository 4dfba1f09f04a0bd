"""A fake OpenAI upstream on loopback, for everyone's tests.

Bodies follow the shapes in the project's OpenAI notes (chat completion / chunk, Responses object and
stream events, embeddings, legacy completions, transcription ``usage.type=tokens``, binary speech,
``ErrorResponse``). Use it as an async context manager::

    async with FakeUpstream() as up:
        ... up.url ... up.requests[-1].json ...

Knobs (attributes, change them between calls):

* ``usage`` -- the :class:`FakeUsage` numbers reported;
* ``model`` -- the resolved model the responses name;
* ``fail(status, body=None, headers=None, times=1, content_type="application/json")`` -- the next
  calls answer that (an error, or any canned body: e.g. a 200 JSON labelled ``text/plain``);
* ``fixed_ids`` -- chat responses use id ``chatcmpl-fixed`` and ``created`` 1700000000 (so two
  calls can be compared byte for byte);
* ``gzip`` -- compress bodies (JSON and SSE, flushed per event) when the client accepts gzip;
* ``hold`` -- an ``asyncio.Event``: streams send their first event then wait for it (realtime
  responses: their ``response.done`` waits for it);
* ``chunk_delay_s`` -- a pause between SSE events;
* ``stream_events`` -- how many content deltas a stream sends;
* ``transcription_seconds`` -- when set, transcriptions report ``usage: {type: duration,
  seconds}`` (as whisper-1 does) instead of ``type: tokens``;
* ``cut_after`` -- when set, SSE streams send that many events and then drop the connection
  (no ``[DONE]``, no terminating chunk): an upstream cut mid-stream;
* ``sse_split`` -- when set (byte offsets), an SSE body is written in pieces cut at those offsets
  of the whole body (with a yield between writes) instead of one write per event; not with gzip.
* ``realtime_usages`` -- when set (a list of Realtime ``usage`` objects), each ``response.create``
  on ``/v1/realtime`` answers ``response.created``, ``realtime_audio_deltas`` large
  ``response.output_audio.delta`` events and ``response.done`` with the next usage of the list
  (cycling), ids ``resp_rt_1``, ``resp_rt_2``, ...; ``realtime_model`` names the session's model;
* ``transcription_text`` -- when set, transcriptions and translations whose ``response_format`` is
  ``text``/``srt``/``vtt`` answer plain text (no usage, as whisper-1 does) and translations answer
  ``{"text"}`` (no usage) otherwise.

Observations: ``requests`` (every request: method, path, query, headers, body or its size/sha256,
parsed JSON), ``stream_cancelled`` (set when a client went away mid-stream), ``first_body_bytes``
(set when a request body's first bytes arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip as gzip_module
import hashlib
import itertools
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.loopback import serve_on_loopback

LARGE_BODY = 1024 * 1024  # bodies above this are counted and hashed, not kept


@dataclass(frozen=True)
class FakeUsage:
    input_tokens: int = 12
    cached_tokens: int = 0
    output_tokens: int = 5
    reasoning_tokens: int = 0
    # Chat details (subsets of the totals above), reported in *_tokens_details:
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def chat(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "audio_tokens": self.audio_input_tokens,
            },
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": self.audio_output_tokens,
                "accepted_prediction_tokens": self.accepted_prediction_tokens,
                "rejected_prediction_tokens": self.rejected_prediction_tokens,
            },
        }

    def responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total,
        }


@dataclass
class SeenRequest:
    method: str
    path: str  # as received (raw)
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes | None  # None when larger than LARGE_BODY
    body_size: int
    body_sha256: str
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)
    head: bytes = b""  # the first 64 KiB of the body (kept even when the body is large)


@dataclass
class _Failure:
    status: int
    body: bytes
    headers: Mapping[str, str]
    times: int
    content_type: str = "application/json"


WORDS = ("Hello", " from", " the", " fake", " upstream", ".", " More", " words", " here", "!")


class FakeUpstream:
    def __init__(
        self, *, model: str = "gpt-4o-mini-2024-07-18", usage: FakeUsage | None = None
    ) -> None:
        self.model = model
        self.usage = usage or FakeUsage()
        self.gzip = False
        self.hold: asyncio.Event | None = None
        self.chunk_delay_s = 0.0
        self.stream_events = 3
        self.transcription_seconds: float | None = None
        self.cut_after: int | None = None
        self.sse_split: list[int] | None = None
        self.realtime_usages: list[dict[str, Any]] | None = None
        self.realtime_model: str | None = None
        self.realtime_audio_deltas = 3
        self.transcription_text: str | None = None
        self.fixed_ids = False
        self.requests: list[SeenRequest] = []
        self.stream_cancelled = asyncio.Event()
        self.first_body_bytes = asyncio.Event()  # set when a streamed upload's first bytes arrive
        self._failures: list[_Failure] = []
        # More routes on the same origin (e.g. tests.support.fake_admin_api.FakeAdminApi.add_routes),
        # added before the catch-all when the server starts.
        self.extra_routes: list[Callable[[web.UrlDispatcher], None]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeUpstream:
        app = web.Application(client_max_size=1024**3)
        r = app.router
        r.add_post("/v1/chat/completions", self._chat)
        r.add_get("/v1/chat/completions/{id}", self._chat_get)
        r.add_post("/v1/responses", self._responses)
        r.add_get("/v1/responses/{id}", self._responses_get)
        r.add_post("/v1/embeddings", self._embeddings)
        r.add_post("/v1/completions", self._completions)
        r.add_post("/v1/audio/transcriptions", self._transcription)
        r.add_post("/v1/audio/translations", self._transcription)
        r.add_post("/v1/audio/speech", self._speech)
        r.add_post("/v1/files", self._upload)
        r.add_post("/v1/uploads/stream", self._upload)
        r.add_get("/v1/models", self._models)
        r.add_get("/v1/realtime", self._realtime)
        r.add_route("*", "/v1/echo/{tail:.*}", self._echo)
        for add_routes in self.extra_routes:
            add_routes(r)
        r.add_route("*", "/{tail:.*}", self._catch_all)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self.port = await serve_on_loopback(self._runner)
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- knobs ----------------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        content_type: str = "application/json",
    ) -> None:
        if body is None:
            body = orjson.dumps(
                {
                    "error": {
                        "message": f"fake upstream error {status}",
                        "type": "invalid_request_error" if status < 500 else "server_error",
                        "param": None,
                        "code": "fake_error",
                    }
                }
            )
        self._failures.append(_Failure(status, body, dict(headers or {}), times, content_type))

    # -- helpers --------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> SeenRequest:
        digest = hashlib.sha256()
        kept: list[bytes] | None = []
        head_parts: list[bytes] = []
        size = 0
        first = True
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            if first:
                self.first_body_bytes.set()
                first = False
            digest.update(chunk)
            size += len(chunk)
            if sum(map(len, head_parts)) < 65536:
                head_parts.append(chunk)
            if kept is not None:
                kept.append(chunk)
                if size > LARGE_BODY:
                    kept = None
        head = b"".join(head_parts)[:65536]
        body = b"".join(kept) if kept is not None else None
        parsed: Any = None
        if body and request.content_type == "application/json":
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        seen = SeenRequest(
            method=request.method,
            path=request.raw_path.split("?", 1)[0],
            query=request.rel_url.raw_query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            body_size=size,
            body_sha256=digest.hexdigest(),
            json=parsed,
            head=head,
        )
        self.requests.append(seen)
        return seen

    def _failure(self) -> web.Response | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        failure.times -= 1
        if failure.times <= 0:
            self._failures.pop(0)
        headers = {"x-request-id": f"req_fail_{len(self.requests)}", **failure.headers}
        return web.Response(
            status=failure.status,
            body=failure.body,
            headers=headers,
            content_type=failure.content_type,
        )

    def _json(self, request: web.Request, data: Any, request_id: str) -> web.Response:
        body = orjson.dumps(data)
        headers = {"x-request-id": request_id, "openai-processing-ms": "12"}
        if self.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip_module.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers, content_type="application/json")

    async def _sse(
        self, request: web.Request, events: list[bytes], request_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "x-request-id": request_id}
        )
        compressor = None
        if self.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.headers["Content-Encoding"] = "gzip"
            compressor = zlib.compressobj(wbits=31)
        await response.prepare(request)
        if self.cut_after is not None:
            events = events[: self.cut_after]
        if self.sse_split is not None and compressor is None:
            events = _split(b"".join(events), self.sse_split)
        try:
            for index, event in enumerate(events):
                data = event
                if compressor is not None:
                    data = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
                await response.write(data)
                if index == 0 and self.hold is not None:
                    await self.hold.wait()
                elif self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                elif self.sse_split is not None:
                    await asyncio.sleep(0.001)  # let each piece reach the reader on its own
            if self.cut_after is not None:
                # Abort the connection: the client sees the body end without its chunk terminator.
                if request.transport is not None:
                    request.transport.abort()
                return response
            if compressor is not None:
                await response.write(compressor.flush())
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self.stream_cancelled.set()
            raise
        return response

    # -- endpoints ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        body = seen.json or {}
        rid = f"req_chat_{len(self.requests)}"
        cid = "chatcmpl-fixed" if self.fixed_ids else f"chatcmpl-fake{len(self.requests)}"
        created = 1700000000 if self.fixed_ids else int(time.time())
        base = {
            "id": cid,
            "created": created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if not body.get("stream"):
            return self._json(
                request,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(WORDS[: self.stream_events]),
                                "refusal": None,
                            },
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": self.usage.chat(),
                },
                rid,
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk = {**base, "object": "chat.completion.chunk"}
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        events = [
            {
                **chunk,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        ]
        for word in (WORDS * 10)[: self.stream_events]:
            events.append(
                {
                    **chunk,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                    **extra,
                }
            )
        events.append(
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra}
        )
        if include_usage:
            events.append({**chunk, "choices": [], "usage": self.usage.chat()})
        raw = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        return await self._sse(request, raw, rid)

    async def _chat_get(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        cid = request.match_info["id"]
        return self._json(
            request,
            {
                "id": cid,
                "object": "chat.completion",
                "created": 1,
                "model": self.model,
                "choices": [],
                "usage": self.usage.chat(),
            },
            "req_get",
        )

    def _response_object(self, rid: str, status: str, with_usage: bool) -> dict[str, Any]:
        text = "".join(WORDS[: self.stream_events])
        return {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": self.model,
            "service_tier": "default",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "output": []
            if not with_usage
            else [
                {
                    "type": "message",
                    "id": "msg_fake",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": self.usage.responses() if with_usage else None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        body = seen.json or {}
        rid = f"resp_fake{len(self.requests)}"
        request_id = f"req_resp_{len(self.requests)}"
        if not body.get("stream"):
            return self._json(request, self._response_object(rid, "completed", True), request_id)
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": self._response_object(rid, "in_progress", False)}),
        ]
        for word in (WORDS * 10)[: self.stream_events]:
            events.append(
                (
                    "response.output_text.delta",
                    {"item_id": "msg_fake", "output_index": 0, "content_index": 0, "delta": word},
                )
            )
        events.append(
            ("response.completed", {"response": self._response_object(rid, "completed", True)})
        )
        raw = []
        for seq, (name, payload) in enumerate(events):
            data = {"type": name, "sequence_number": seq, **payload}
            raw.append(f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n")
        return await self._sse(request, raw, request_id)

    async def _responses_get(self, request: web.Request) -> web.StreamResponse:
        """A stored (completed) Response, usage included, as ``GET /v1/responses/{id}`` returns."""
        await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        rid = request.match_info["id"]
        return self._json(request, self._response_object(rid, "completed", True), "req_resp_get")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        return self._json(
            request,
            {
                "object": "list",
                "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
                "usage": {
                    "prompt_tokens": self.usage.input_tokens,
                    "total_tokens": self.usage.input_tokens,
                },
            },
            "req_emb",
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        body = seen.json or {}
        base = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": "gpt-3.5-turbo-instruct",
        }
        if not body.get("stream"):
            return self._json(
                request,
                {
                    **base,
                    "choices": [
                        {"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": self.usage.input_tokens,
                        "completion_tokens": self.usage.output_tokens,
                        "total_tokens": self.usage.total,
                    },
                },
                "req_cmpl",
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = [
            {**base, "choices": [{"text": w, "index": 0, "logprobs": None, "finish_reason": None}]}
            for w in WORDS[: self.stream_events]
        ]
        if include_usage:
            events.append(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": self.usage.input_tokens,
                        "completion_tokens": self.usage.output_tokens,
                        "total_tokens": self.usage.total,
                    },
                }
            )
        raw = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        return await self._sse(request, raw, "req_cmpl")

    async def _transcription(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        # Parse a copy of the multipart body for the test's benefit.
        if seen.body is not None:
            seen.form = _parse_multipart(seen.body, request.headers.get("Content-Type", ""))
        if self.transcription_text is not None:
            return self._plain_transcription(request, seen)
        if self.transcription_seconds is not None:
            return self._json(
                request,
                {
                    "text": "hello world",
                    "usage": {"type": "duration", "seconds": self.transcription_seconds},
                },
                "req_tr",
            )
        return self._json(
            request,
            {
                "text": "hello world",
                "usage": {
                    "type": "tokens",
                    "input_tokens": self.usage.input_tokens,
                    "input_token_details": {
                        "text_tokens": 0,
                        "audio_tokens": self.usage.input_tokens,
                    },
                    "output_tokens": self.usage.output_tokens,
                    "total_tokens": self.usage.total,
                },
            },
            "req_tr",
        )

    def _plain_transcription(self, request: web.Request, seen: SeenRequest) -> web.Response:
        """whisper-1 text/srt/vtt and translations: no usage anywhere in the response."""
        text = self.transcription_text or ""
        form = seen.form or _parse_multipart(seen.head, request.headers.get("Content-Type", ""))
        fmt = form.get("response_format", "json")
        headers = {"x-request-id": "req_tr_text"}
        if fmt in ("text", "srt", "vtt"):
            return web.Response(text=text, content_type="text/plain", headers=headers)
        return self._json(request, {"text": text}, "req_tr_text")

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        response = web.StreamResponse(
            headers={"Content-Type": "audio/mpeg", "x-request-id": "req_speech"}
        )
        await response.prepare(request)
        for i in range(4):
            await response.write(bytes(range(256)) * (i + 1))
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        return self._json(
            request,
            {
                "bytes": seen.body_size,
                "sha256": seen.body_sha256,
                "content_type": request.headers.get("Content-Type"),
            },
            "req_up",
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        return self._json(
            request,
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 1, "owned_by": "system"}],
            },
            "req_models",
        )

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request)
        if (failed := self._failure()) is not None:
            return failed
        return self._json(
            request,
            {
                "method": seen.method,
                "path": seen.path,
                "query": seen.query,
                "headers": {str(k): v for k, v in seen.headers.items()},
                "bytes": seen.body_size,
                "sha256": seen.body_sha256,
            },
            "req_echo",
        )

    async def _catch_all(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response(
            {
                "error": {
                    "message": "not found",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            status=404,
        )

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        ws = web.WebSocketResponse(protocols=("realtime",))
        await ws.prepare(request)
        await ws.send_str(
            orjson.dumps(
                {"type": "session.created", "session": {"model": request.query.get("model")}}
            ).decode()
        )
        if self.realtime_model is not None:
            await ws.send_str(
                orjson.dumps(
                    {"type": "session.updated", "session": {"model": self.realtime_model}}
                ).decode()
            )
        responses = 0
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                event = orjson.loads(msg.data)
                if event.get("type") == "response.create" and self.realtime_usages:
                    responses += 1
                    usage = self.realtime_usages[(responses - 1) % len(self.realtime_usages)]
                    await self._realtime_response(ws, f"resp_rt_{responses}", usage)
                elif event.get("type") == "response.create":
                    await ws.send_str(
                        orjson.dumps(
                            {
                                "type": "response.done",
                                "response": {
                                    "id": "resp_rt",
                                    "status": "completed",
                                    "usage": {
                                        "total_tokens": self.usage.total,
                                        "input_tokens": self.usage.input_tokens,
                                        "output_tokens": self.usage.output_tokens,
                                        "input_token_details": {
                                            "text_tokens": self.usage.input_tokens,
                                            "audio_tokens": 0,
                                            "cached_tokens": 0,
                                        },
                                        "output_token_details": {
                                            "text_tokens": self.usage.output_tokens,
                                            "audio_tokens": 0,
                                        },
                                    },
                                },
                            }
                        ).decode()
                    )
                else:
                    await ws.send_str(orjson.dumps({"type": "echo", "event": event}).decode())
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def _realtime_response(
        self, ws: web.WebSocketResponse, rid: str, usage: dict[str, Any]
    ) -> None:
        await ws.send_str(
            orjson.dumps(
                {
                    "type": "response.created",
                    "event_id": f"ev_{rid}_0",
                    "response": {"id": rid, "object": "realtime.response", "status": "in_progress"},
                }
            ).decode()
        )
        audio = "UklGRg" * 4000  # ~24 KB of base64-looking audio per delta
        for i in range(self.realtime_audio_deltas):
            await ws.send_str(
                orjson.dumps(
                    {
                        "type": "response.output_audio.delta",
                        "event_id": f"ev_{rid}_{i + 1}",
                        "response_id": rid,
                        "item_id": f"item_{rid}",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": audio,
                    }
                ).decode()
            )
        if self.hold is not None:  # a response still in progress: its done event waits
            await self.hold.wait()
            if ws.closed:
                return
        await ws.send_str(
            orjson.dumps(
                {
                    "type": "response.done",
                    "event_id": f"ev_{rid}_done",
                    "response": {
                        "id": rid,
                        "object": "realtime.response",
                        "status": "completed",
                        "output": [],
                        "usage": usage,
                    },
                }
            ).decode()
        )


def _split(body: bytes, offsets: list[int]) -> list[bytes]:
    cuts = sorted({o % (len(body) + 1) for o in offsets} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def _parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """Field name -> str value (text parts) or bytes (file parts). Minimal, for assertions."""
    marker = "boundary="
    if marker not in content_type:
        return {}
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode()
    out: dict[str, Any] = {}
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, value = part.partition(b"\r\n\r\n")
        value = value.removesuffix(b"\r\n")
        name = None
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-disposition") and 'name="' in line:
                name = line.split('name="', 1)[1].split('"', 1)[0]
        if name is None:
            continue
        out[name] = value if b"filename=" in head else value.decode()
    return out
