"""Database URLs as users write them -> async drivers."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.urls import describe, to_async_url


def test_sqlite_relative_path_resolves_against_cwd() -> None:
    url = to_async_url("sqlite:///openai-meter.db", cwd=Path("/srv/meter"))
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == "/srv/meter/openai-meter.db"


def test_sqlite_absolute_path_kept() -> None:
    assert to_async_url("sqlite:////var/lib/m.db").database == "/var/lib/m.db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_maps_to_asyncpg_and_hides_password(scheme: str) -> None:
    url = to_async_url(f"{scheme}://meter:s3cret@db.internal:5433/ledger")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database) == ("db.internal", 5433, "ledger")
    assert "s3cret" not in describe(url)


def test_explicit_driver_is_kept() -> None:
    assert to_async_url("postgresql+asyncpg://u@h/d").drivername == "postgresql+asyncpg"


@pytest.mark.parametrize("bad", ["mysql://u@h/d", "sqlite://", "sqlite:///:memory:"])
def test_unsupported_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        to_async_url(bad)
