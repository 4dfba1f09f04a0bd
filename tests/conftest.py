"""Shared fixtures: a fake OpenAI upstream and the proxy pointed at it (both on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ProxyServer, settings_for


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def proxy_server(fake_upstream: FakeUpstream) -> AsyncIterator[ProxyServer]:
    """The proxy app (NullHooks) on a free loopback port, forwarding to ``fake_upstream``."""
    settings = settings_for(fake_upstream.url, server={"shutdown_grace_s": 1.0})
    async with ProxyServer(settings) as server:
        yield server
