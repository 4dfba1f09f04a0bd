"""The whole product (``proxy.app.create_app``) on loopback with a temp-dir SQLite ledger, for tests.

    async with Product(fake_upstream.url, tmp_path) as product:
        client = product.sdk("sk-test-…")
        ...
    rows = await product.rows()          # after stop: everything drained to the database

``rows()`` opens its own engine on the ledger's URL, so it also works after the app stopped (the
usual way to count records exactly: stopping drains the writer and the spool) and across restarts.
``wait_rows(n)`` polls the running app's ledger until ``n`` rows are there (a deadline, not a timing
assertion).

Building the tiktoken encodings costs ~1.4 s of CPU per app; :func:`share_encodings` (use it from
an autouse fixture) makes every ``create_app`` in the test process reuse one real, already loaded
:class:`~proxy.usage.encodings.Encodings` (the serve-subprocess test still runs the real start-up).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

import proxy.app
from proxy.app import create_app
from proxy.settings import Settings
from proxy.teams.budgets import Clock
from proxy.usage.encodings import Encodings
from storage.engine import create_engine
from storage.queries import fetch_records
from tests.support.proxy_server import ProxyServer, settings_for


@functools.cache
def _loaded_encodings() -> Encodings:
    encodings = Encodings()
    encodings.preload()
    return encodings


def share_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``create_app`` use one process-wide, preloaded ``Encodings`` (test speed only)."""
    monkeypatch.setattr(proxy.app, "Encodings", _loaded_encodings)


def product_settings(upstream_url: str, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for a temp-dir SQLite ledger with a short flush interval; sections override."""
    base: dict[str, dict[str, Any]] = {
        "database": {"url": f"sqlite:///{tmp_path}/l.db"},
        "ledger": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20},
        "server": {"shutdown_grace_s": 5.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return settings_for(upstream_url, **base)


async def ledger_rows(database_url: str, **filters: Any) -> list[dict[str, Any]]:
    """Every ledger row (newest first), read with a fresh engine."""
    engine = create_engine(database_url)
    try:
        return await fetch_records(engine, limit=1000, **filters)
    finally:
        await engine.dispose()


class Product:
    def __init__(
        self,
        upstream_url: str,
        tmp_path: Path,
        *,
        clock: Clock | None = None,
        settings: Settings | None = None,
        **sections: dict[str, Any],
    ) -> None:
        self.settings = settings or product_settings(upstream_url, tmp_path, **sections)
        self.app: web.Application = create_app(self.settings, clock=clock)
        self.server = ProxyServer(self.settings, app=self.app)
        self._clients: list[openai.AsyncOpenAI] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def sdk(self, api_key: str = "sk-test-product", **kwargs: Any) -> openai.AsyncOpenAI:
        """An async SDK client pointed at the proxy (closed when the product stops)."""
        kwargs.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(api_key=api_key, base_url=self.base_url, **kwargs)
        self._clients.append(client)
        return client

    async def rows(self, **filters: Any) -> list[dict[str, Any]]:
        return await ledger_rows(self.settings.database.url, **filters)

    async def wait_rows(self, count: int, deadline_s: float = 10.0) -> list[dict[str, Any]]:
        """Rows once at least ``count`` are in the database (fails after ``deadline_s``)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            rows = await self.rows()
            if len(rows) >= count:
                return rows
            if loop.time() > end:
                raise AssertionError(f"{len(rows)} ledger rows after {deadline_s}s, wanted {count}")
            await asyncio.sleep(0.02)

    async def start(self) -> Product:
        await self.server.start()
        return self

    async def stop(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()
        await self.server.stop()

    async def __aenter__(self) -> Product:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
