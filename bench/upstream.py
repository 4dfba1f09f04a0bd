"""A minimal fake OpenAI upstream for benchmarks: fixed chat JSON and SSE bodies, no work per call."""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

CHAT_JSON = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how can I help?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 8,
            "total_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
    }
).encode()


def _sse_chunks(include_usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
    }
    out = []
    words = ["Hello", " there", ",", " how", " can", " I", " help", "?"]
    for i, w in enumerate(words):
        delta = {"content": w} if i else {"role": "assistant", "content": w}
        out.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        out.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
            }
        )
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in out] + [b"data: [DONE]\n\n"]


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=CHAT_JSON, content_type="application/json")
    include = bool((body.get("stream_options") or {}).get("include_usage"))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for chunk in _sse_chunks(include):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


EMBEDDING_JSON = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0125] * 256}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
).encode()


async def embeddings(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=EMBEDDING_JSON, content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark fake upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=_loop(args.uvloop),
    )


def _loop(use_uvloop: bool) -> asyncio.AbstractEventLoop | None:
    if not use_uvloop:
        return None
    import uvloop

    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
