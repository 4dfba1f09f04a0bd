"""Run :class:`FakeUpstream` as its own process: ``python -m tests.support.fake_upstream_main PORT [DELAY]``."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from tests.support.fake_upstream import FakeUpstream


async def _main(port: int, delay: float) -> None:
    upstream = FakeUpstream()
    upstream.chunk_delay_s = delay
    upstream.stream_events = 5
    await upstream.start()
    # Re-bind on the requested port (start() picked a free one): run a second site.
    assert upstream._runner is not None
    site = web.TCPSite(upstream._runner, "127.0.0.1", port)
    await site.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
