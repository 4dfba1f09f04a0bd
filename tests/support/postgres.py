"""PostgreSQL for tests: the server at ``OPENAI_METER_TEST_POSTGRES_URL``, one fresh database per test.

* Unreachable server -> the test is skipped with the reason, unless ``OPENAI_METER_REQUIRE_POSTGRES=1``
  (CI), where it fails.
* Each test gets its own database (``om_test_<session>_<n>``, created in ~0.1 s); all of this
  session's databases are dropped at the end, so tests can run beside others using the same server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def admin_url() -> str:
    return os.environ.get("OPENAI_METER_TEST_POSTGRES_URL", DEFAULT_URL)


def postgres_required() -> bool:
    return os.environ.get("OPENAI_METER_REQUIRE_POSTGRES") == "1"


def _connect_kwargs(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "password": parsed.password,
        "database": parsed.database or "postgres",
        "timeout": 5,
    }


async def _execute(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**_connect_kwargs(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class PostgresDatabases:
    """Creates throw-away databases on the test server; drops them all on ``close``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._prefix = f"om_test_{secrets.token_hex(4)}"
        self._created: list[str] = []

    def check(self) -> str | None:
        """None when reachable, else the reason."""
        try:
            asyncio.run(_execute(self.url, "SELECT 1"))
        except Exception as exc:
            return f"PostgreSQL unreachable at {make_url(self.url).render_as_string(hide_password=True)}: {exc!r}"
        return None

    def create(self) -> str:
        """A new empty database; returns its URL as users write it (``postgresql://…``)."""
        name = f"{self._prefix}_{len(self._created)}"
        asyncio.run(_execute(self.url, f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        if self._created:
            statements = [f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in self._created]
            asyncio.run(_execute(self.url, *statements))
            self._created.clear()


@contextmanager
def postgres_databases() -> Iterator[PostgresDatabases]:
    """Session helper: yields the factory, or skips/fails (per env) when the server is unreachable."""
    databases = PostgresDatabases(admin_url())
    reason = databases.check()
    if reason is not None:
        if postgres_required():
            pytest.fail(f"{reason} (OPENAI_METER_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    try:
        yield databases
    finally:
        databases.close()
