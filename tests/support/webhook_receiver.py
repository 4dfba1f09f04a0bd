"""A webhook receiver on loopback (aiohttp) for budget-alert tests.

    async with WebhookReceiver() as hook:
        hook.fail_with(500, 500)        # the next two requests get 500, then 200 again
        hook.block = True               # requests hang until the receiver stops
        url = hook.url_for("/services/T0/B0/secret")
        ...
        hook.accepted                   # bodies answered 200, in arrival order

``stop()`` then ``start()`` again listens on the same port (a connection refused in between).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.loopback import serve_on_loopback


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class WebhookReceiver:
    port: int = 0
    block: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def url_for(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == 200]

    def events(self) -> list[str]:
        """``event`` of every accepted JSON-format body."""
        return [d.json()["event"] for d in self.accepted]

    def fail_with(self, *statuses: int) -> None:
        self._failures.extend(statuses)

    async def wait_for(self, count: int, deadline_s: float = 15.0) -> list[Delivery]:
        """Until ``count`` requests arrived (any status); fails after ``deadline_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while len(self.deliveries) < count:
            if loop.time() > end:
                raise AssertionError(f"{len(self.deliveries)} webhook requests, wanted {count}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.05)
        return self.deliveries

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self._failures.pop(0) if self._failures else 200
        if self.block:
            self.deliveries.append(Delivery(request.path_qs, dict(request.headers), body, 0))
            self._arrived.set()
            await self._release.wait()  # until stop()
            return web.Response(status=503)
        self.deliveries.append(Delivery(request.path_qs, dict(request.headers), body, status))
        self._arrived.set()
        return web.Response(status=status, text="ok" if status == 200 else "nope")

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._release = asyncio.Event()
        # No access log: it would print the URL, and tests check no log line holds its secret.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        if self.port == 0:
            self.port = await serve_on_loopback(self._runner)
        else:  # the same port again: the sender's retries must find us where we were
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
