"""Nothing a client sends can make the proxy connect anywhere but the configured upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ProxyServer


class Sentinel:
    """A loopback server that only counts connections: it must see none."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def sentinel() -> AsyncIterator[Sentinel]:
    s = Sentinel()
    await s.start()
    yield s
    await s.stop()


async def _raw(port: int, request_line: str, headers: str = "") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{request_line}\r\n{headers}Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("request_line", "headers", "forwarded_path"),
    [
        # absolute-form URI naming another host: the host is ignored
        ("GET http://127.0.0.1:{s}/v1/models HTTP/1.1", "Host: 127.0.0.1:{s}\r\n", "/v1/models"),
        ("GET /v1/models HTTP/1.1", "Host: 127.0.0.1:{s}\r\n", "/v1/models"),
        ("GET /v1/models HTTP/1.1", "Host: x\r\nX-Forwarded-Host: 127.0.0.1:{s}\r\n", "/v1/models"),
        # authority smuggled in the path: it is just a path segment upstream
        ("GET /v1//127.0.0.1:{s}/models HTTP/1.1", "Host: x\r\n", "/v1/127.0.0.1:{s}/models"),
        ("GET /v1/%2F%2F127.0.0.1:{s}/models HTTP/1.1", "Host: x\r\n", "/v1/127.0.0.1:{s}/models"),
        ("GET /v1/a/../models HTTP/1.1", "Host: x\r\n", "/v1/models"),
        ("GET /v1/a/%2e%2e/models HTTP/1.1", "Host: x\r\n", "/v1/models"),
    ],
)
async def test_forwarding_target_cannot_be_redirected(
    fake_upstream: FakeUpstream,
    proxy_server: ProxyServer,
    sentinel: Sentinel,
    request_line: str,
    headers: str,
    forwarded_path: str,
) -> None:
    status, _ = await _raw(
        proxy_server.port,
        request_line.format(s=sentinel.port),
        headers.format(s=sentinel.port),
    )
    assert sentinel.connections == 0
    assert [r.path for r in fake_upstream.requests] == [forwarded_path.format(s=sentinel.port)]
    assert status in (200, 404)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../meter/prices",
        "/v1/%2e%2e/meter/prices",
        "/v1/%2E%2E/meter/prices",
        "/v1/..%2fmeter/prices",
        "/v1/..%2Fmeter/prices",
        "/v1/..%5cmeter/prices",
        "/v1/x/../../meter/prices",
        "/v1/../../../etc/passwd",
        "//127.0.0.1/v1/models",
    ],
)
async def test_escapes_from_v1_are_never_sent_upstream(
    fake_upstream: FakeUpstream, proxy_server: ProxyServer, sentinel: Sentinel, path: str
) -> None:
    status, _ = await _raw(proxy_server.port, f"GET {path} HTTP/1.1", "Host: x\r\n")
    assert status == 404
    assert fake_upstream.requests == []
    assert sentinel.connections == 0
