"""Database URLs in messages: the password never shows, whatever the URL or the error; a driver
failure is one line naming its cause (not SQLAlchemy's SQL and link)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError, OperationalError

from storage.urls import masked, problem, sqlite_file, to_async_url

passwords = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="@/:\n\r "),
    min_size=3,
    max_size=40,
).filter(lambda p: p not in ("***", "meter", "db.internal", "ledger"))


@given(passwords, st.sampled_from(["postgresql", "postgres", "mysql", "sqlite", "weird+driver"]))
def test_masked_never_shows_the_password(password: str, scheme: str) -> None:
    url = f"{scheme}://meter:{quote(password, safe='')}@db.internal:5432/ledger"
    shown = masked(url)
    assert quote(password, safe="") not in shown
    assert "meter:***@db.internal" in shown


@given(passwords)
def test_problem_never_echoes_the_password(password: str) -> None:
    url = f"postgresql://meter:{password}@db.internal/ledger"
    error = OperationalError("SELECT 1", {}, Exception(f"auth failed for {password}\nmore"))
    text = problem(error, url)
    assert password not in text and "\n" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("garbage", "garbage"),
        ("postgresql://meter@db/ledger", "postgresql://meter@db/ledger"),
        ("sqlite:///openai-meter.db", "sqlite:///openai-meter.db"),
        ("postgresql://meter:pw@db/ledger", "postgresql://meter:***@db/ledger"),
        ("not a url://u:secret@host", "not a url://u:***@host"),
    ],
)
def test_masked_keeps_what_the_user_wrote(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_problem_takes_the_innermost_cause_first_line() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5999)")
    wrapped = DBAPIError("SELECT 1", {}, refused)
    assert problem(wrapped).startswith("connection refused")
    try:
        try:
            raise refused
        except OSError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert problem(outer).startswith("connection refused")
    assert problem(TimeoutError()) == "timed out"
    assert problem(KeyError()) == "KeyError"
    cycle = ValueError("a")
    cycle.__cause__ = ValueError("b")
    cycle.__cause__.__cause__ = cycle  # never loops forever
    assert problem(cycle) in ("a", "b")


@pytest.mark.parametrize(
    "url", ["garbage", "", "://", "mysql://h/db", "sqlite://", "sqlite:///:memory:"]
)
def test_invalid_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError):
        to_async_url(url)


def test_sqlite_file_is_the_resolved_path() -> None:
    assert sqlite_file("sqlite:///a/b.db", cwd=Path("/srv")) == Path("/srv/a/b.db")
    assert sqlite_file("postgresql://h/db") is None
