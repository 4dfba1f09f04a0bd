"""Running an aiohttp app on sockets bound *before* anything else was opened, with connection
timeouts a slow or idle client cannot defeat.

``openai-meter serve`` binds first (:func:`bind`): a port in use is then one line and nothing else
happened — no ledger file, no spool directory, no "listening" log. Only then does :func:`serve`
start the app (its ``cleanup_ctx`` opens the ledger) and accept connections on the bound sockets
until ``stop`` is set; then it stops accepting, lets in-flight requests finish for
``shutdown_timeout`` seconds and runs the app's cleanup (the ledger drains).

* ``server.idle_timeout_s`` -- aiohttp's keep-alive timeout (``keepalive_timeout``): a connection
  waiting for its next request is closed once this long has passed since it opened or since its
  previous response. It never applies while a request is being handled, so a long stream is not cut.
* ``server.header_timeout_s`` -- aiohttp has no header-read timeout (a head dribbled one byte every
  2 s was held for ever). :class:`HeadDeadline` wraps each connection's protocol: its first request
  head must be complete (the blank line that ends it has arrived) within this time of the connection
  opening, or the connection is aborted. Later heads on a kept-alive connection are bounded by the
  idle timeout above.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Final

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
                # The guard's work is done: later callbacks go straight to aiohttp's handler
                # (one Python frame less per chunk for the connection's life).
                transport = self._transport
                if transport is not None and not transport.is_closing():
                    transport.set_protocol(self._inner)
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


class BindError(OSError):
    """The listen address cannot be bound; ``str()`` is one line naming it and the cause."""


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(
    host: str, port: int, *, backlog: int = 128, reuse_port: bool = False
) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address ``host`` resolves to (as asyncio's
    ``create_server`` would bind them: ``SO_REUSEADDR``, IPv6 sockets IPv6-only).

    ``reuse_port``: ``SO_REUSEPORT``, so several sockets (one per worker process) listen on the
    same port and the kernel spreads new connections over them (``serve --workers``)."""
    where = format_address(host, port)
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise BindError(f"cannot listen on {where}: SO_REUSEPORT is not supported here")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bound_port(sockets: Sequence[socket.socket]) -> int:
    """The port the sockets listen on (the real one when 0 was asked for)."""
    port: int = sockets[0].getsockname()[1]
    return port


class GuardedSockSite(web.SockSite):
    """``web.SockSite`` whose connections get a :class:`HeadDeadline` (``0`` disables it)."""

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, *, header_timeout_s: float
    ) -> None:
        super().__init__(runner, sock)
        self._header_timeout_s = header_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; SockSite.start would serve unguarded
        server = self._runner.server
        assert server is not None
        timeout = self._header_timeout_s
        factory: Callable[[], asyncio.Protocol] = server
        if timeout > 0:

            def factory() -> asyncio.Protocol:
                return HeadDeadline(server(), timeout)

        self._server = await asyncio.get_running_loop().create_server(
            factory, sock=self._sock, backlog=self._backlog
        )


async def serve(
    app: web.Application,
    sockets: Sequence[socket.socket],
    *,
    stop: asyncio.Event,
    shutdown_timeout: float,
    header_timeout_s: float = 0.0,
    idle_timeout_s: float = 75.0,
    on_started: Callable[[], None] | None = None,
    **runner_kwargs: object,
) -> None:
    """Start ``app`` (its startup may raise: its cleanup then still runs), accept on ``sockets``
    until ``stop`` is set, then shut down gracefully."""
    runner = web.AppRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=idle_timeout_s,
        **runner_kwargs,  # type: ignore[arg-type]
    )
    try:
        await runner.setup()
        for sock in sockets:
            await GuardedSockSite(runner, sock, header_timeout_s=header_timeout_s).start()
        if on_started is not None:
            on_started()
        await stop.wait()
    finally:
        await runner.cleanup()
