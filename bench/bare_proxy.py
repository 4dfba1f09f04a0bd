"""The baseline: a bare aiohttp pass-through with no metering (what DESIGN's budget is relative to)."""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
    "accept-encoding",
}

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = await request.read()
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.rel_url.raw_path_qs,
        headers=headers,
        data=body,
    ) as up:
        resp = web.StreamResponse(
            status=up.status,
            headers={k: v for k, v in up.headers.items() if k.lower() not in HOP},
        )
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(auto_decompress=True)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/v1/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bare aiohttp pass-through (benchmark baseline)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (the issue's floor)")
    args = parser.parse_args()
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        make_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
