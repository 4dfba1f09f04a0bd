"""WebSocket relay for ``/v1/realtime`` (and any ``/v1/`` upgrade): both directions, message by message.

The upstream connection is opened *before* the client's upgrade is accepted, so an unreachable or
refusing upstream becomes an ordinary HTTP error (502/504, or the upstream's handshake status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping

from aiohttp import (
    ClientError,
    ClientSession,
    ClientWSTimeout,
    WSMessage,
    WSMsgType,
    WSServerHandshakeError,
    web,
)
from yarl import URL

from proxy.http.errors import error_response, upstream_timeout, upstream_unreachable

log = logging.getLogger("openai_meter.websocket")

# Called with each complete upstream -> client message (text as UTF-8 bytes).
MessageObserver = Callable[[bytes], None]

_CLOSE_TIMEOUT_S = 10.0


def _client_protocols(headers: Mapping[str, str]) -> tuple[str, ...]:
    value = headers.get("Sec-WebSocket-Protocol", "")
    return tuple(p.strip() for p in value.split(",") if p.strip())


async def _pump(
    source: AsyncIterable[WSMessage],
    send_str: Callable[[str], Awaitable[None]],
    send_bytes: Callable[[bytes], Awaitable[None]],
    observe: MessageObserver | None,
) -> None:
    """Copy data messages until the source closes (pings are answered by each side itself)."""
    async for msg in source:
        if msg.type is WSMsgType.TEXT:
            await send_str(msg.data)
            if observe is not None:
                observe(msg.data.encode())
        elif msg.type is WSMsgType.BINARY:
            await send_bytes(msg.data)
            if observe is not None:
                observe(msg.data)
        elif msg.type is WSMsgType.ERROR:
            break


async def relay_websocket(
    request: web.Request,
    session: ClientSession,
    url: URL,
    headers: Mapping[str, str],
    *,
    connect_timeout_s: float,
    observe: MessageObserver | None = None,
    proxy: URL | None = None,
) -> web.StreamResponse:
    """Accept the client's upgrade and relay messages to/from ``url`` until either side closes."""
    try:
        upstream = await session.ws_connect(
            url,
            headers=headers,
            protocols=_client_protocols(request.headers),
            autoclose=False,
            autoping=True,
            max_msg_size=0,
            proxy=proxy,
            timeout=ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_TIMEOUT_S),
        )
    except WSServerHandshakeError as exc:
        return error_response(
            exc.status,
            f"The upstream refused the WebSocket upgrade: {exc.message}",
            "upstream_error",
            code="websocket_handshake_failed",
        )
    except TimeoutError as exc:
        return upstream_timeout(f"WebSocket connect: {type(exc).__name__}")
    except (ClientError, OSError) as exc:
        return upstream_unreachable(type(exc).__name__)

    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        autoping=True,
        max_msg_size=0,
    )
    try:
        await client.prepare(request)
        to_upstream = asyncio.ensure_future(
            _pump(client, upstream.send_str, upstream.send_bytes, None)
        )
        to_client = asyncio.ensure_future(
            _pump(upstream, client.send_str, client.send_bytes, observe)
        )
        done, pending = await asyncio.wait(
            (to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        for task in (*done, *pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if to_client in done:  # upstream closed first: pass its code on
            code = upstream.close_code or 1000
            await client.close(code=code)
        else:
            code = client.close_code or 1000
            await upstream.close(code=code)
    finally:
        if not upstream.closed:
            await upstream.close()
        if not client.closed:
            with contextlib.suppress(Exception):
                await client.close()
    return client
