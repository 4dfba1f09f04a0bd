"""Creating the async engine: SQLite in WAL mode with a busy timeout, PostgreSQL with timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.sqlite_batch import SQLITE_BUSY_TIMEOUT_MS, apply_pragmas
from storage.urls import to_async_url


def create_engine(
    url: str, *, cwd: Path | None = None, connect_timeout_s: float = 5.0
) -> AsyncEngine:
    """The one engine for a database URL as users write it (see :mod:`storage.urls`).

    The caller owns it: ``await engine.dispose()`` at shutdown.
    """
    async_url = to_async_url(url, cwd)
    if async_url.get_backend_name() == "sqlite":
        Path(async_url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            async_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        async_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"timeout": connect_timeout_s, "command_timeout": 60},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    apply_pragmas(dbapi_connection)
