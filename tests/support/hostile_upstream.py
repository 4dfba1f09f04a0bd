"""A misbehaving upstream in its own process, so its CPU never lands on the proxy's event loop.

``python -m tests.support.hostile_upstream MODE MEGABYTES`` prints its port on stdout, then serves
``POST /v1/chat/completions`` (any body) with a 200 ``text/event-stream``:

* ``line``: one normal chunk, then a ``data:`` line of MEGABYTES MB with no newline (written in
  64 KiB pieces), then its blank line and ``data: [DONE]``;
* ``gzip``: the same stream gzip-compressed in one go (``Content-Encoding: gzip``): a ~0.1 % ratio
  "SSE bomb" that decompresses to MEGABYTES MB of one line.

No usage chunk is ever sent (the proxy must estimate: ``oversized_event``).
"""

from __future__ import annotations

import asyncio
import sys
import zlib

from aiohttp import web

FIRST = (
    b'data: {"id":"chatcmpl-h","object":"chat.completion.chunk","created":1,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":"hi"},"finish_reason":null}]}\n\n'
)
PIECE = 64 * 1024


def gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, wbits=31)
    parts = [compressor.compress(FIRST + b"data: ")]
    block = b"a" * (1024 * 1024)
    for _ in range(megabytes):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(b"\n\ndata: [DONE]\n\n"))
    parts.append(compressor.flush())
    return b"".join(parts)


async def _serve(mode: str, megabytes: int) -> None:
    bomb = gzip_bomb(megabytes) if mode == "gzip" else b""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        headers = {"Content-Type": "text/event-stream", "x-request-id": "req_hostile"}
        if mode == "gzip":
            headers["Content-Encoding"] = "gzip"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        if mode == "gzip":
            for start in range(0, len(bomb), PIECE):
                await response.write(bomb[start : start + PIECE])
        else:
            await response.write(FIRST)
            await response.write(b"data: ")
            piece = b"a" * PIECE
            for _ in range(megabytes * 16):
                await response.write(piece)
            await response.write(b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
