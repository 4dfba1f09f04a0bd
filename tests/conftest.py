"""Shared fixtures: a fake OpenAI upstream and the proxy pointed at it (both on loopback), and
ledger databases of each backend (PostgreSQL from ``tests.support.postgres``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import create_engine
from storage.migrate import upgrade
from tests.support.fake_upstream import FakeUpstream
from tests.support.postgres import PostgresDatabases, postgres_databases
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


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases]:
    with postgres_databases() as databases:
        yield databases


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables) of each backend, as a user-style URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    databases: PostgresDatabases = request.getfixturevalue("pg_databases")
    return databases.create()


@pytest.fixture
def postgres_url(pg_databases: PostgresDatabases) -> str:
    """A fresh, empty PostgreSQL database (PostgreSQL-only tests)."""
    return pg_databases.create()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a ledger database migrated to head (each backend)."""
    eng = create_engine(database_url)
    await upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()
