"""Database URLs as users write them, mapped to the async drivers the ledger uses.

``sqlite:///openai-meter.db`` -> ``sqlite+aiosqlite:////abs/cwd/openai-meter.db`` (a relative path
resolves against the working directory, once, when the URL is read);
``postgresql://user@host/db`` (or ``postgres://``) -> ``postgresql+asyncpg://user@host/db``.
URLs that already name a driver are kept as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def to_async_url(url: str, cwd: Path | None = None) -> URL:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a database URL: use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
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


_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@/\s]*@")


def masked(url: str) -> str:
    """``url`` as the user wrote it (same scheme), password replaced by ``***``; also for text
    that is not a URL SQLAlchemy can parse."""
    try:
        parsed = make_url(url)
    except Exception:  # unparseable: mask anything that looks like user:password@
        return _PASSWORD_RE.sub(r"\1***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: str, cwd: Path | None = None) -> Path | None:
    """The file a SQLite ledger URL names (None for other databases and ``file:`` URIs)."""
    parsed = to_async_url(url, cwd)
    if parsed.get_backend_name() != "sqlite" or (parsed.database or "").startswith("file:"):
        return None
    return Path(parsed.database or "")


def problem(exc: BaseException, url: str | None = None) -> str:
    """A database failure as one line: the innermost cause's message (driver errors carry the
    useful text; SQLAlchemy's wrapper adds SQL and a link), never the password of ``url``."""
    root: BaseException = exc
    seen: set[int] = set()
    while id(root) not in seen:
        seen.add(id(root))
        inner = getattr(root, "orig", None) or root.__cause__
        if not isinstance(inner, BaseException):
            break
        root = inner
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = re.sub(r"^<class '[\w.]+'>: ", "", text)
    if isinstance(root, ConnectionRefusedError) or "Connect call failed" in text:
        text = f"connection refused ({text})" if text else "connection refused"
    elif isinstance(root, TimeoutError) and not text:
        text = "timed out"
    elif not text:
        text = type(root).__name__
    if url:
        password = _password_of(url)
        if password:
            text = text.replace(password, "***")
    return text


def _password_of(url: str) -> str | None:
    try:
        return make_url(url).password
    except Exception:
        found = _PASSWORD_RE.search(url)
        return found.group(0)[len(found.group(1)) : -1] if found else None
