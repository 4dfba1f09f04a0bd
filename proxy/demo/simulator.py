"""A SIMULATED OpenAI upstream for ``openai-meter demo`` -- canned answers, no network, no key.

It answers ``POST /v1/chat/completions`` (JSON, and SSE streams honouring
``stream_options.include_usage``), ``POST /v1/embeddings`` (float or base64) and ``GET /v1/models``
in OpenAI's shapes, with usage numbers derived deterministically from the request (about four
characters per token), so the demo's report is the same on every run. Every answer says what it is:
the ``x-openai-meter-simulator: 1`` header, ``system_fingerprint`` ``fp_openai_meter_demo`` and
replies starting with ``[simulated]``. It is never the upstream of ``openai-meter serve``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web

SIMULATOR_HEADER: Final = "x-openai-meter-simulator"
FINGERPRINT: Final = "fp_openai_meter_demo"
# What the API reports as the response's model for the aliases the demo uses.
SNAPSHOTS: Final[Mapping[str, str]] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
}
EMBEDDING_DIMENSIONS: Final = 16
_HEADERS: Final = {SIMULATOR_HEADER: "1"}


def tokens_of(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters per token."""
    return max(1, (len(text) + 3) // 4)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 1
    # ~3 tokens of framing per message plus 3 to prime the reply, as OpenAI counts chat input.
    return 3 + sum(
        3 + tokens_of(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
    )


def reply_for(messages: Any) -> str:
    last = ""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = _text_of(messages[-1].get("content"))
    topic = " ".join(last.split()[:8]) or "your request"
    return f"[simulated] A canned answer about: {topic}. No model was called."


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=_HEADERS
    )


class Simulator:
    """The aiohttp app and a count of the calls it answered."""

    def __init__(self) -> None:
        self.calls = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/embeddings", self.embeddings)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_route("*", "/{tail:.*}", self.unknown)

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    async def unknown(self, request: web.Request) -> web.Response:
        return _error(404, f"the demo simulator does not implement {request.path}", "unknown_url")

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "openai-meter-demo"} for m in SNAPSHOTS]
        return web.Response(
            body=orjson.dumps({"object": "list", "data": data}),
            content_type="application/json",
            headers=_HEADERS,
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if body is None or not isinstance(body.get("model"), str):
            return _error(400, "the body must be a JSON object with a model")
        self.calls += 1
        model = SNAPSHOTS.get(body["model"], body["model"])
        messages = body.get("messages")
        text = reply_for(messages)
        prompt, completion = prompt_tokens(messages), tokens_of(text)
        call_id = f"chatcmpl-demo{self.calls:06d}"
        created = int(time.time())
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(
                request, call_id, created, model, text, _usage(prompt, completion), include_usage
            )
        document = {
            "id": call_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(prompt, completion),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        return web.Response(
            body=orjson.dumps(document), content_type="application/json", headers=_HEADERS
        )

    async def _stream(
        self,
        request: web.Request,
        call_id: str,
        created: int,
        model: str,
        text: str,
        usage: dict[str, Any],
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", **_HEADERS}
        )
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None, choices: bool = True) -> bytes:
            event: dict[str, Any] = {
                "id": call_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                if choices
                else [],
            }
            if include_usage:
                event["usage"] = None
            return b"data: " + orjson.dumps(event) + b"\n\n"

        await response.write(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        words = text.split(" ")
        for index, word in enumerate(words):
            await response.write(chunk({"content": word if index == 0 else " " + word}, None))
        await response.write(chunk({}, "stop"))
        if include_usage:
            last = orjson.loads(chunk({}, None, choices=False)[len(b"data: ") :])
            last["usage"] = usage
            await response.write(b"data: " + orjson.dumps(last) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is None or not isinstance(body.get("model"), str):
            return _error(400, "the body must be a JSON object with a model")
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        if not inputs or not all(isinstance(i, str) for i in inputs):
            return _error(400, "input must be a string or a list of strings")
        self.calls += 1
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
            vector = [(digest[d] - 128) / 128 for d in range(EMBEDDING_DIMENSIONS)]
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(tokens_of(t) for t in inputs)
        document = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(
            body=orjson.dumps(document), content_type="application/json", headers=_HEADERS
        )
