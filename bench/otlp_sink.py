"""A collector stand-in for benchmarks: accepts OTLP/HTTP exports and drops them.

``python -m bench.otlp_sink --port P``. Answers every ``POST /v1/traces`` / ``/v1/metrics`` with
an empty (valid) protobuf response after reading the body, as a collector's receiver would.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def _accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", _accept)
    app.router.add_post("/v1/metrics", _accept)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
