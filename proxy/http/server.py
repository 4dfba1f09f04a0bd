"""Serving the app on TCP with connection timeouts a slow or idle client cannot defeat.

* ``server.idle_timeout_s`` -- aiohttp's keep-alive timeout: a connection waiting for its next
  request (idle, or still receiving that request's head) is closed once this long has passed since
  it opened or since its previous response. It never applies while a request is being handled, so a
  long stream is not cut.
* ``server.header_timeout_s`` -- aiohttp has no header-read timeout (a head dribbled one byte every
  2 s was held for ever). :class:`HeadDeadline` wraps each connection's protocol: its first request
  head must be complete (the blank line that ends it has arrived) within this time of the connection
  opening, or the connection is aborted. Later heads on a kept-alive connection are bounded by the
  idle timeout above.

:func:`run` is ``web.run_app`` with :class:`GuardedTCPSite` instead of aiohttp's ``TCPSite`` (same
signal handling: SIGTERM/SIGINT stop accepting, in-flight calls finish for ``shutdown_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

log = logging.getLogger("openai_meter.server")

# A head ends with an empty line: CRLF CRLF, or LF LF from lenient clients.
_HEAD_ENDS: Final = (b"\n\r\n", b"\n\n")


class HeadDeadline(asyncio.Protocol):
    """Delegates every protocol callback to aiohttp's handler; aborts the connection when the first
    request head is not complete ``timeout_s`` after the connection opened."""

    __slots__ = ("_inner", "_tail", "_timeout_s", "_timer", "_transport")

    def __init__(self, inner: asyncio.Protocol, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            # Until the first head ended: scan each new chunk once, plus the 2 bytes before it.
            seam = self._tail + data[:2]
            if any(end in seam or end in data for end in _HEAD_ENDS):
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = (self._tail + data)[-2:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            log.debug("closing a connection whose request head did not arrive in time")
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:
                transport.close()


class GuardedTCPSite(web.BaseSite):
    """``web.TCPSite`` whose connections get a :class:`HeadDeadline` (``0`` disables it)."""

    __slots__ = ("_bound_port", "_header_timeout_s", "_host", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout_s: float,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._header_timeout_s = header_timeout_s
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        timeout = self._header_timeout_s
        factory: Callable[[], asyncio.Protocol] = server
        if timeout > 0:

            def factory() -> asyncio.Protocol:
                return HeadDeadline(server(), timeout)

        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        sockets = self._server.sockets
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port


async def _serve(
    app: web.Application, host: str, port: int, header_timeout_s: float, **kw: Any
) -> None:
    runner = web.AppRunner(app, handle_signals=True, **kw)
    await runner.setup()
    try:
        await GuardedTCPSite(runner, host, port, header_timeout_s=header_timeout_s).start()
        await asyncio.Event().wait()  # until SIGTERM/SIGINT (GracefulExit) cancels this task
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    header_timeout_s: float,
    idle_timeout_s: float,
    shutdown_timeout: float,
    **runner_kwargs: Any,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then drain (``web.run_app``'s loop handling)."""
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(
        _serve(
            app,
            host,
            port,
            header_timeout_s,
            keepalive_timeout=idle_timeout_s,
            shutdown_timeout=shutdown_timeout,
            **runner_kwargs,
        )
    )
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main_task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main_task.done():
                main_task.cancel()  # runs runner.cleanup(): in-flight calls get shutdown_timeout
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main_task)
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
