"""``openai-meter db``: upgrade an empty database, prune by retention, report the revision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from proxy.cli import main
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import current_revision, head_revision
from storage.schema import usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import make_record
from tests.support.refusing_db import accept_poison, refuse_poison


async def _state(url: str) -> tuple[str | None, int]:
    engine = create_engine(url)
    try:
        revision = await current_revision(engine)
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(usage_records))).scalar()
        return revision, int(count or 0)
    finally:
        await engine.dispose()


async def _seed(url: str) -> None:
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        await write_batch(
            engine,
            [make_record(1, started_at=now - timedelta(days=10)), make_record(2, started_at=now)],
        )
    finally:
        await engine.dispose()


def test_upgrade_then_prune(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_METER_DATABASE_URL", raising=False)
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert head_revision() in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", database_url]) == 0  # idempotent
    asyncio.run(_seed(database_url))
    assert main(["db", "prune", "--database-url", database_url]) == 2  # no window configured
    assert main(["db", "prune", "--database-url", database_url, "--retention-days", "3"]) == 0
    assert "deleted 1 raw rows" in capsys.readouterr().out
    assert asyncio.run(_state(database_url)) == (head_revision(), 1)


def test_relative_sqlite_url_resolves_against_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_METER_DATABASE_URL", "sqlite:///data/ledger.db")
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "data" / "ledger.db").exists()


def test_bad_url_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--database-url", "mysql://x/y"]) == 2
    assert "unsupported database URL scheme" in capsys.readouterr().err


def test_rejected_list_and_retry(
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``db rejected`` lists the dead-letter store; ``retry`` re-inserts once the cause is fixed."""
    monkeypatch.delenv("OPENAI_METER_DATABASE_URL", raising=False)
    assert main(["db", "upgrade", "--database-url", database_url]) == 0

    async def dead_letter_one() -> None:
        engine = create_engine(database_url)
        try:
            await refuse_poison(engine)
            writer = LedgerWriter(engine, Spool(tmp_path / "spool"))
            await writer.start()
            writer.submit(make_record(7, model="poison", team="search"))
            await asyncio.wait_for(writer.flush(), 10)
            await writer.stop()
        finally:
            await engine.dispose()

    asyncio.run(dead_letter_one())
    capsys.readouterr()
    assert main(["db", "rejected", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "1 rejected records, known cost 0.0000270007 USD" in out
    assert "rec-000000007" in out and "search" in out and "poison" in out
    assert main(["db", "rejected", "retry", "--database-url", database_url]) == 1  # still refused
    assert "0 re-inserted, 1 still refused" in capsys.readouterr().out

    async def fix() -> None:
        engine = create_engine(database_url)
        try:
            await accept_poison(engine)
        finally:
            await engine.dispose()

    asyncio.run(fix())
    assert main(["db", "rejected", "--database-url", database_url, "retry", "--id", "1"]) == 0
    assert "1 re-inserted, 0 still refused" in capsys.readouterr().out
    assert main(["db", "rejected", "list", "--database-url", database_url]) == 0
    assert "0 rejected records" in capsys.readouterr().out
    assert asyncio.run(_state(database_url)) == (head_revision(), 1)
