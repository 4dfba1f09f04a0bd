"""The commands that only read or tidy the ledger (``report``, ``export focus``, ``reconcile``,
``db rejected [list|retry]``, ``db prune``, ``db current``) given a URL with no ledger -- a mistyped
SQLite path, a directory that does not exist, an empty file, an empty PostgreSQL database -- say so
in one line (exit 1) and create nothing: no file, no directory, no table. One helper decides
(``proxy.commands.report.open_ledger``); only ``db upgrade`` and ``serve`` create a ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

from proxy.cli import main
from storage.engine import create_engine
from storage.schema import usage_records

# (arguments, the prefix of its error line)
COMMANDS: dict[str, tuple[list[str], str]] = {
    "report": (["report"], "report"),
    "export": (["export", "focus"], "export"),
    # the Admin API is never asked: nothing listens on port 9 and the ledger is checked first
    "reconcile": (["reconcile", "--upstream", "http://127.0.0.1:9"], "reconcile"),
    "db-rejected": (["db", "rejected"], "db rejected list"),
    "db-rejected-list": (["db", "rejected", "list"], "db rejected list"),
    "db-rejected-retry": (["db", "rejected", "retry"], "db rejected retry"),
    "db-prune": (["db", "prune", "--retention-days", "3"], "db prune"),
    "db-current": (["db", "current"], "db current"),
}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_METER_DATABASE_URL", "OPENAI_METER_CONFIG", "OPENAI_METER_UPSTREAM_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-test-only")
    monkeypatch.chdir(tmp_path)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _refused(name: str, url: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    args, prefix = COMMANDS[name]
    code = main([*args, "--database-url", url])
    out, err = capsys.readouterr()
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"openai-meter {prefix}: "), lines[0]
    assert "Traceback" not in err and "SELECT" not in err and "sqlalche.me" not in err
    return out, lines[0]


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize(
    "url", ["sqlite:///no/such/dir/x.db", "sqlite:///absent.db", "sqlite:///{tmp}/absent.db"]
)
def test_a_mistyped_sqlite_path_is_one_line_and_creates_nothing(
    name: str, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url.format(tmp=tmp_path)
    out, line = _refused(name, url, capsys)
    assert f"no ledger at {url}" in line
    assert "nothing was created" in line
    assert out == ""
    assert _tree(tmp_path) == []  # not the file, not its directories


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_empty_file_or_a_directory_is_no_ledger_and_stays_as_it_was(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "folder.db").mkdir()
    for url in ("sqlite:///empty.db", "sqlite:///folder.db"):
        _, line = _refused(name, url, capsys)
        assert f"no ledger at {url}" in line
    assert (tmp_path / "empty.db").read_bytes() == b""
    assert _tree(tmp_path) == ["empty.db", "folder.db"]


@pytest.mark.postgres
@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_empty_postgres_database_is_no_ledger_and_gets_no_table(
    name: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, line = _refused(name, postgres_url, capsys)
    assert "no ledger at postgresql://" in line

    async def tables() -> list[str]:
        engine = create_engine(postgres_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        finally:
            await engine.dispose()

    assert asyncio.run(tables()) == []


@pytest.mark.parametrize("name", ["db-rejected", "db-rejected-retry"])
def test_db_rejected_on_a_ledger_older_than_the_dead_letter_table_says_upgrade(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def old_ledger() -> None:  # a ledger from before revision 0007 (no ledger_rejected)
        engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(usage_records.create)
        finally:
            await engine.dispose()

    asyncio.run(old_ledger())
    _, line = _refused(name, "sqlite:///old.db", capsys)
    assert "has no ledger_rejected table yet" in line and "openai-meter db upgrade" in line


def test_on_a_migrated_ledger_the_commands_read_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check lets a ledger through (and ``db upgrade`` still creates one, directories too)."""
    url = f"sqlite:///{tmp_path / 'deep' / 'ledger.db'}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    for name in ("report", "export", "db-rejected", "db-rejected-retry", "db-prune", "db-current"):
        args, _ = COMMANDS[name]
        assert main([*args, "--database-url", url]) == 0, capsys.readouterr().err
