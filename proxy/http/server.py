"""Running an aiohttp app on a socket that was bound *before* anything else was opened.

``openai-meter serve`` binds first (:func:`bind`): a port in use is then one line and nothing else
happened — no ledger file, no spool directory, no "listening" log. Only then does :func:`serve`
start the app (its ``cleanup_ctx`` opens the ledger) and accept connections on the bound sockets
until ``stop`` is set; then it stops accepting, lets in-flight requests finish for
``shutdown_timeout`` seconds and runs the app's cleanup (the ledger drains).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

from aiohttp import web


class BindError(OSError):
    """The listen address cannot be bound; ``str()`` is one line naming it and the cause."""


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int, *, backlog: int = 128) -> list[socket.socket]:
    """Listening, non-blocking sockets for every address ``host`` resolves to (as asyncio's
    ``create_server`` would bind them: ``SO_REUSEADDR``, IPv6 sockets IPv6-only)."""
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


async def serve(
    app: web.Application,
    sockets: Sequence[socket.socket],
    *,
    stop: asyncio.Event,
    shutdown_timeout: float,
    on_started: Callable[[], None] | None = None,
    **runner_kwargs: object,
) -> None:
    """Start ``app`` (its startup may raise: its cleanup then still runs), accept on ``sockets``
    until ``stop`` is set, then shut down gracefully."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, **runner_kwargs)  # type: ignore[arg-type]
    try:
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        if on_started is not None:
            on_started()
        await stop.wait()
    finally:
        await runner.cleanup()
