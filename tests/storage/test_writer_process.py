"""The SQLite ledger's writer process (``ledger.writer_process``): the same tables as the in-process
path, and every failure mapped onto the writer's rules — refused rows dead-lettered, an unusable
database spooled, a dead or stuck process replaced without losing or doubling a record."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import sqlite_batch
from storage.bounds import Refused, bound_record
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.record import UsageRecord
from storage.rows import record_to_json
from storage.schema import usage_records
from storage.service import LedgerConfig, open_ledger
from storage.spool import Spool
from storage.sqlite_rows import COLUMNS, sqlite_row, sqlite_row_from_json
from storage.writer import LedgerWriter
from storage.writer_process import (
    BatchRefused,
    EncodedLines,
    SqliteWriterProcess,
    WriterProcessOutage,
)
from tests.storage.test_batch_write import _records
from tests.storage.test_bounds import any_record
from tests.storage.test_poison import ledger_ids, rejected_ids, rollup_requests
from tests.support.ledger_records import make_record
from tests.support.refusing_db import refuse_poison


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, SqliteWriterProcess]]:
    """A migrated SQLite ledger and a writer process for it (both closed afterwards)."""
    engine = await _ledger(tmp_path / "l.db")
    process = SqliteWriterProcess(str(tmp_path / "l.db"))
    try:
        yield engine, process
    finally:
        await process.close()
        await engine.dispose()


async def _ledger(path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite:///{path}")
    await upgrade(engine)
    return engine


def _dump(path: Path) -> tuple[list[Any], list[Any]]:
    with sqlite3.connect(path) as conn:
        raw = conn.execute("SELECT * FROM usage_records ORDER BY id").fetchall()
        daily = conn.execute("SELECT * FROM usage_daily ORDER BY 1, 2, 3, 4, 5").fetchall()
    return raw, daily


@settings(max_examples=300, deadline=None)
@given(record=any_record(), offset_minutes=st.sampled_from([0, 0, 0, 90, -600]))
def test_a_row_from_a_journal_line_equals_the_row_from_its_record(
    record: UsageRecord, offset_minutes: int
) -> None:
    """The writer process's shortcut (line -> row, no record) and the full path agree on any
    storable record, UTC or not (another offset takes the full path inside)."""
    from datetime import timedelta, timezone

    bounded = bound_record(record)
    if isinstance(bounded, Refused):
        return
    zone = timezone(timedelta(minutes=offset_minutes))
    moved = dataclasses.replace(
        bounded,
        started_at=bounded.started_at.astimezone(zone),
        finished_at=bounded.finished_at.astimezone(zone),
    )
    line = record_to_json(moved)
    assert sqlite_row_from_json(line) == sqlite_row(bounded)


def _through_both_paths(directory: Path, batches: list[Any]) -> list[tuple[int, int]]:
    """Write ``batches`` in order through the writer process (into ``process.db``) and through
    SQLAlchemy's path (``inproc.db``); assert both ledgers end byte-identical and return each
    batch's inserted counts (process, in-process)."""
    ours, theirs = directory / "process.db", directory / "inproc.db"

    async def run() -> list[tuple[int, int]]:
        for path in (ours, theirs):
            await (await _ledger(path)).dispose()
        engine = create_engine(f"sqlite:///{theirs}")
        process = SqliteWriterProcess(str(ours))
        try:
            return [(await process(b), await write_batch(engine, b)) for b in batches]
        finally:
            await process.close()
            await engine.dispose()

    counts = asyncio.run(run())
    assert _dump(ours) == _dump(theirs)
    return counts


def test_the_row_encoding_has_the_tables_columns_in_order() -> None:
    assert tuple(c.name for c in usage_records.columns) == COLUMNS


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_records, min_size=1, max_size=3))
def test_both_paths_leave_identical_tables(tmp_path_factory: Any, batches: list[Any]) -> None:
    """Whatever the batches (duplicates, replays, any offset, >10 decimal places): byte-identical
    raw rows and rollup from SQLAlchemy's path and from the writer process's."""
    replayed = [batch for batch in batches for _ in range(2)]  # a replay adds nothing either side
    for ours, theirs in _through_both_paths(tmp_path_factory.mktemp("both"), replayed):
        assert ours == theirs


def test_the_sync_batch_writer_rolls_back_a_refused_batch_whole(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    asyncio.run(_migrated(path))
    conn = sqlite_batch.connect(str(path))
    conn.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_records "
        "WHEN NEW.model = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
    )
    batch = [make_record(n, model="poison" if n == 3 else "gpt-4o") for n in range(5)]
    with pytest.raises(sqlite3.IntegrityError):
        sqlite_batch.write_batch(conn, batch)
    assert not conn.in_transaction
    assert _dump(path) == ([], [])  # nothing half-written, rollup included
    assert sqlite_batch.write_batch(conn, batch[:3]) == 3


async def _migrated(path: Path) -> None:
    await (await _ledger(path)).dispose()


def test_the_writer_never_creates_a_database_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        sqlite_batch.connect(str(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()


async def test_refused_rows_are_dead_lettered_and_the_rest_land(tmp_path: Path) -> None:
    engine = await _ledger(tmp_path / "l.db")
    await refuse_poison(engine)
    process = SqliteWriterProcess(str(tmp_path / "l.db"))
    writer = LedgerWriter(
        engine,
        Spool(tmp_path / "spool"),
        batch_size=9,
        batch_writer=process,
        lines=process.lines,
    )
    await writer.start()
    records = [make_record(n, model="poison" if n == 4 else "gpt-4o-mini") for n in range(9)]
    for record in records:
        writer.submit(record)
    await asyncio.wait_for(writer.flush(), 20)
    await writer.stop()
    await process.close()
    assert sorted(await ledger_ids(engine)) == [r.id for r in records if r.id != "rec-000000004"]
    assert await rejected_ids(engine) == ["rec-000000004"]
    assert await rollup_requests(engine) == 8
    assert len(process.lines) == 0  # every remembered line forgotten once settled
    await engine.dispose()


async def test_a_refusal_carries_the_drivers_message(
    ledger: tuple[AsyncEngine, SqliteWriterProcess],
) -> None:
    engine, process = ledger
    await refuse_poison(engine)
    with pytest.raises(BatchRefused) as refused:
        await process([make_record(1, model="poison")])
    assert refused.value.orig == "IntegrityError: poison refused"
    assert await process([make_record(2)]) == 1  # the same process goes on


async def test_an_unusable_database_is_an_outage_and_the_batch_is_spooled(tmp_path: Path) -> None:
    engine = await _ledger(tmp_path / "l.db")
    process = SqliteWriterProcess(str(tmp_path / "gone" / "l.db"))  # nothing there: outage
    try:
        with pytest.raises(WriterProcessOutage) as outage:
            await process([make_record(1)])
        assert isinstance(outage.value, OSError)  # what LedgerWriter's is_outage() spools
        registry = CollectorRegistry()
        writer = LedgerWriter(
            engine,
            Spool(tmp_path / "spool"),
            batch_size=5,
            flush_interval_ms=10,
            batch_writer=process,
            lines=process.lines,
            registry=registry,
            retry_initial_s=60,
        )
        await writer.start()
        for n in range(5):
            writer.submit(make_record(n))
        for _ in range(200):
            if registry.get_sample_value("openai_meter_ledger_spooled_records_total"):
                break
            await asyncio.sleep(0.05)
        assert registry.get_sample_value("openai_meter_ledger_spooled_records_total") == 5
        assert writer.degraded
        await writer.stop()
        assert not (tmp_path / "gone").exists()  # never created a database of its own
    finally:
        await process.close()
        await engine.dispose()


async def test_a_killed_process_is_replaced_and_the_batch_retried(
    ledger: tuple[AsyncEngine, SqliteWriterProcess],
) -> None:
    engine, process = ledger
    assert await process([make_record(1)]) == 1
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert await process([make_record(1), make_record(2)]) == 1  # idempotent on id
    assert process.pid not in (None, first)
    assert process.restarts == 1
    assert sorted(await ledger_ids(engine)) == ["rec-000000001", "rec-000000002"]


async def test_a_process_that_dies_on_every_try_refuses_the_batch(tmp_path: Path) -> None:
    dies = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(1); sys.exit(3)"]
    process = SqliteWriterProcess(str(tmp_path / "l.db"), command=dies)
    try:
        with pytest.raises(BatchRefused, match="WriterProcessDied"):
            await process([make_record(1)])
        assert process.restarts == 2
    finally:
        await process.close()


async def test_a_timeout_mid_batch_kills_it_and_the_next_batch_starts_afresh(
    ledger: tuple[AsyncEngine, SqliteWriterProcess],
) -> None:
    _, process = ledger
    await process.start()
    stuck = process.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)  # stops answering, like a process stuck on a lock
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(process([make_record(1)]), 0.5)
    assert await process([make_record(1), make_record(2)]) == 2
    assert process.pid != stuck


async def test_it_ignores_sigint_and_sigterm_and_ends_when_its_input_closes(
    ledger: tuple[AsyncEngine, SqliteWriterProcess],
) -> None:
    _, process = ledger
    await process.start()
    pid = process.pid
    assert pid is not None
    await asyncio.sleep(0.3)  # past start-up, signal handlers installed
    os.kill(pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    os.kill(pid, signal.SIGTERM)
    assert await process([make_record(1)]) == 1
    assert process.pid == pid
    await process.close()  # its input closes: it exits (and is reaped)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_open_ledger_runs_one_for_a_sqlite_file_and_none_otherwise(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    config = LedgerConfig(url=url, spool_dir=str(tmp_path / "spool"), flush_interval_ms=10)
    async with open_ledger(config) as ledger:
        ledger.writer.submit(make_record(1))
        await asyncio.wait_for(ledger.writer.flush(), 20)
        process = ledger.writer._write
        assert isinstance(process, SqliteWriterProcess) and process.pid is not None
    assert await_count(tmp_path / "l.db") == 1
    inproc = LedgerConfig(
        url=f"sqlite:///{tmp_path / 'b.db'}",
        spool_dir=str(tmp_path / "spool-b"),
        writer_process=False,
        flush_interval_ms=10,
    )
    async with open_ledger(inproc) as ledger:
        assert not isinstance(ledger.writer._write, SqliteWriterProcess)
        ledger.writer.submit(make_record(2))
        await asyncio.wait_for(ledger.writer.flush(), 20)
    assert await_count(tmp_path / "b.db") == 1


def await_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM usage_records").fetchone()[0])


def test_encoded_lines_check_identity_forget_and_stay_bounded() -> None:
    lines = EncodedLines(limit=2)
    a, b, c = make_record(1), make_record(2), make_record(3)
    lines.remember(a, b"A")
    lines.remember(b, b"B")
    lines.remember(c, b"C")  # past the limit: not kept, encoded when asked
    assert (lines.line(a), lines.line(b)) == (b"A", b"B")
    assert lines.line(c) == record_to_json(c)
    twin: UsageRecord = make_record(1)  # equal, but another object: never a stale line
    assert lines.line(twin) == record_to_json(twin)
    lines.forget([a, twin, c])
    assert len(lines) == 1 and lines.line(a) == record_to_json(a)


def test_journal_times_in_utc_take_the_shortcut_and_others_do_not() -> None:
    from storage.sqlite_rows import _utc_text

    assert _utc_text("2026-11-29T12:00:00.123456+00:00") == "2026-11-29 12:00:00.123456"
    assert _utc_text("2026-11-29T12:00:00+00:00") == "2026-11-29 12:00:00.000000"
    for other in ("2026-11-29T12:00:00+01:00", "2026-11-29T12:00:00", "x" * 32, None, 5):
        assert _utc_text(other) is None


def test_line_breaks_and_separators_inside_values_never_split_a_record(tmp_path: Path) -> None:
    """Batches are newline-separated journal lines: a value holding CR, LF, U+2028 or a NUL (as
    bounded) must arrive as one record, byte for byte as the in-process path stores it."""
    odd = ["a\nb", "c\r\nd", "e\u2028f\u2029g", 'h"\\n', "\x00nul", "zé\u0301"]
    records = [
        make_record(n, user=value, project=value, tags={"k": value}, model="gpt-4o")
        for n, value in enumerate(odd)
    ]
    records = [r for r in (bound_record(r) for r in records) if not isinstance(r, Refused)]
    assert len(records) == len(odd)
    assert _through_both_paths(tmp_path, [records]) == [(len(odd), len(odd))]
