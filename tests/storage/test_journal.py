"""The per-record journal: appended on submit, truncated once durable, replayed after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.journal import Journal, leftover_segments
from storage.record import UsageRecord
from storage.rows import record_from_json
from storage.schema import usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import make_record


def _lines(path: Path) -> list[str]:
    return [record_from_json(line).id for line in path.read_bytes().splitlines() if line]


def test_committed_records_are_truncated_and_whole_segments_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=2000)
    for n in range(12):
        journal.append(make_record(n))
    segments = leftover_segments(tmp_path)
    assert len(segments) > 2  # rotated at ~2 KB
    assert [i for s in segments for i in _lines(s)] == [make_record(n).id for n in range(12)]
    journal.committed(5)  # the first segments hold only committed records: gone
    remaining = [i for s in leftover_segments(tmp_path) for i in _lines(s)]
    assert make_record(0).id not in remaining and make_record(11).id in remaining
    assert all(make_record(n).id in remaining for n in range(5, 12))
    journal.committed(7)  # everything durable: the open segment is truncated to nothing
    assert all(s.stat().st_size == 0 for s in leftover_segments(tmp_path))
    journal.append(make_record(99))  # appends start again at offset 0
    assert [i for s in leftover_segments(tmp_path) for i in _lines(s)] == [make_record(99).id]
    journal.sync()
    journal.close(everything_durable=False)
    assert [i for s in leftover_segments(tmp_path) for i in _lines(s)] == [make_record(99).id]


async def test_a_crashed_writers_journal_is_replayed_on_start(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The process dies with records queued and a batch in flight: the journal has them all."""
    never = asyncio.Event()

    async def hung_database(batch: Sequence[UsageRecord]) -> int:
        await never.wait()
        return 0

    spool = Spool(tmp_path)
    crashed = LedgerWriter(
        engine, spool, batch_size=10, flush_interval_ms=1, batch_writer=hung_database,
        write_timeout_s=3600,
    )  # fmt: skip
    await crashed.start()
    for n in range(35):
        crashed.submit(make_record(n))
    await asyncio.sleep(0.05)  # a batch is in flight, the rest queued; nothing durable yet
    for task in crashed._tasks:  # "kill -9": no drain, no spool, nothing closed but the lock
        task.cancel()
    spool.close()
    assert leftover_segments(tmp_path)

    restarted = LedgerWriter(engine, Spool(tmp_path), retry_initial_s=0.01)
    await restarted.start()
    await asyncio.wait_for(restarted.flush(), 10)
    await restarted.stop()
    async with engine.connect() as conn:
        ids = sorted((await conn.execute(select(usage_records.c.id))).scalars())
    assert ids == [make_record(n).id for n in range(35)]
    assert not [p for p in leftover_segments(tmp_path) if p.stat().st_size]
    assert not Spool(tmp_path).sealed_segments()


async def test_journal_is_empty_while_idle_and_gone_after_a_clean_stop(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    writer = LedgerWriter(engine, Spool(tmp_path), flush_interval_ms=1)
    await writer.start()
    for n in range(20):
        writer.submit(make_record(n))
    await asyncio.wait_for(writer.flush(), 10)
    assert all(p.stat().st_size == 0 for p in leftover_segments(tmp_path))
    await writer.stop()
    assert leftover_segments(tmp_path) == []
