"""Serve an aiohttp app on a free loopback port (tests only ever listen on 127.0.0.1)."""

from __future__ import annotations

from aiohttp import web


async def serve_on_loopback(runner: web.AppRunner) -> int:
    """Set ``runner`` up, listen on 127.0.0.1 at a free port, and return that port."""
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return int(runner.addresses[0][1])
