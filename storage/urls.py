"""Database URLs as users write them, mapped to the async drivers the ledger uses.

``sqlite:///openai-meter.db`` -> ``sqlite+aiosqlite:////abs/cwd/openai-meter.db`` (a relative path
resolves against the working directory, once, when the URL is read);
``postgresql://user@host/db`` (or ``postgres://``) -> ``postgresql+asyncpg://user@host/db``.
URLs that already name a driver are kept as they are.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def to_async_url(url: str, cwd: Path | None = None) -> URL:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: use sqlite or postgresql"
        )
    if "+" not in parsed.drivername:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ValueError("the ledger needs a SQLite file, not an in-memory database")
        if not database.startswith("file:"):
            path = Path(database).expanduser()
            if not path.is_absolute():
                path = (cwd or Path.cwd()) / path
            parsed = parsed.set(database=str(path))
    return parsed


def describe(url: URL) -> str:
    """The URL for logs: password hidden."""
    return url.render_as_string(hide_password=True)
