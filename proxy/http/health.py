"""``GET /healthz`` (the process answers) and ``GET /readyz`` (every registered check passes).

Components register readiness checks on the app's :class:`Readiness` (``READINESS_KEY`` in
``proxy.app``): the upstream session registers one, the ledger writer adds its own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from aiohttp import web

log = logging.getLogger("openai_meter.health")

ReadinessCheck = Callable[[], bool | Awaitable[bool]]

_CHECK_TIMEOUT_S: Final[float] = 2.0


class Readiness:
    """Named readiness checks. A check returns True when its component can serve traffic."""

    def __init__(self) -> None:
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    async def run(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in self._checks.items():
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, _CHECK_TIMEOUT_S)
                results[name] = bool(value)
            except Exception:  # a failing check means "not ready", never a 500
                log.warning("readiness check %s failed", name, exc_info=True)
                results[name] = False
        return results


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def readyz_handler(readiness: Readiness) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def readyz(request: web.Request) -> web.Response:
        checks = await readiness.run()
        ready = all(checks.values())
        body = orjson.dumps({"status": "ready" if ready else "not_ready", "checks": checks})
        return web.Response(
            status=200 if ready else 503, body=body, content_type="application/json"
        )

    return readyz
