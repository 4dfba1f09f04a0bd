"""The product's forwarder with metering off (``build_app`` without a meter): a benchmark target.

Splits what ``openai-meter serve`` costs over the bare pass-through into the forwarder's own share
(path safety, header rules, bounded body read, hooks seam) and metering's share (the difference
between this target and the full product).
"""

from __future__ import annotations

import argparse

from aiohttp import web

from proxy.app import SERVER_KWARGS, build_app
from proxy.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description="openai-meter's forwarder with no metering")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (as serve does)")
    args = parser.parse_args()
    settings = Settings.model_validate({"upstream": {"url": args.upstream}})
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        build_app(settings),
        host="127.0.0.1",
        port=args.port,
        print=None,
        loop=loop,
        **SERVER_KWARGS,  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
