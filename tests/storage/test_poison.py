"""A bad row never blocks good rows, and the writer never stops (issue 10), on both backends.

Refusals here come from the real database: a trigger refuses rows whose model is ``poison``
(a stand-in for any row the database rejects after bounding), and the normaliser refuses records
without sane token counts. Every record ends in exactly one of: the ledger, the dead-letter store.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.bounds import clean_text
from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.record import UsageRecord
from storage.rejected import list_rejected, rejected_totals, retry_rejected
from storage.rows import record_to_json
from storage.schema import ledger_rejected, usage_daily, usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.storage.test_bounds import any_record
from tests.support.ledger_records import make_record
from tests.support.refusing_db import accept_poison, refuse_poison


async def ledger_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(usage_records.c.id))).scalars())


async def rejected_ids(engine: AsyncEngine) -> list[str | None]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(ledger_rejected.c.record_id))).scalars())


async def rollup_requests(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.sum(usage_daily.c.requests)))).scalar() or 0)


class CountingWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.attempts: list[list[str]] = []

    async def __call__(self, batch: Sequence[UsageRecord]) -> int:
        self.attempts.append([r.id for r in batch])
        return await write_batch(self.engine, batch)


def sample(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def test_one_refused_row_in_the_middle_the_others_land_and_it_is_dead_lettered(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await refuse_poison(engine)
    counting = CountingWriter(engine)
    registry = CollectorRegistry()
    writer = LedgerWriter(
        engine, Spool(tmp_path), batch_size=9, batch_writer=counting, registry=registry
    )
    await writer.start()
    records = [make_record(n, model="poison" if n == 4 else "gpt-4o-mini") for n in range(9)]
    for record in records:
        writer.submit(record)
    await asyncio.wait_for(writer.flush(), 10)
    assert sorted(await ledger_ids(engine)) == [r.id for r in records if r.id != "rec-000000004"]
    assert await rejected_ids(engine) == ["rec-000000004"]
    assert await rollup_requests(engine) == 8  # the rollup holds exactly the landed rows
    # Found by halving: the refused row was tried alone; every good row landed in one write.
    assert ["rec-000000004"] in counting.attempts
    assert len(counting.attempts) <= 2 * 4 + 1
    assert sample(registry, "openai_meter_ledger_rejected_records_total") == 1
    assert sample(registry, "openai_meter_ledger_pending_records") == 0
    # Later records still flow: the writer is alive and not degraded.
    writer.submit(make_record(50))
    await asyncio.wait_for(writer.flush(), 10)
    assert "rec-000000050" in await ledger_ids(engine)
    await writer.stop()

    (row,) = await list_rejected(engine)
    assert "poison" in row.error and row.record_id == "rec-000000004"
    assert await rejected_totals(engine) == (1, records[4].cost_usd)
    # After a fix, 'retry' moves it into the ledger (and out of the dead-letter table).
    await accept_poison(engine)
    result = await retry_rejected(engine)
    assert (result.inserted, result.still_rejected) == (1, 0)
    assert "rec-000000004" in await ledger_ids(engine)
    assert await rejected_ids(engine) == []
    assert await rollup_requests(engine) == 10


async def test_a_retry_still_refused_stays_with_its_count(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await refuse_poison(engine)
    writer = LedgerWriter(engine, Spool(tmp_path), batch_size=3)
    await writer.start()
    writer.submit(make_record(1, model="poison"))
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()
    result = await retry_rejected(engine)
    assert (result.inserted, result.still_rejected) == (0, 1)
    (row,) = await list_rejected(engine)
    assert row.retries == 1 and row.retried_at is not None


async def test_a_poisoned_spool_from_a_previous_run_heals_on_start(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Lines an older version spooled (unbounded values, a number no column holds, a torn line)."""
    good = [make_record(n) for n in range(5)]
    poisons: list[dict[str, object]] = [
        {"user": "u" * 256},  # wider than the column: cut, stored
        {"model_requested": "m" * 300, "service_tier": "t" * 33, "request_id": "r" * 300},
        {"model": "nul\u0000inside"},  # PostgreSQL refuses NUL in text: replaced, stored
        {"input_tokens": 10**17},  # numeric overflow downstream: refused -> dead-letter
        {"output_tokens": "10000000000000000000"},  # spelled as a bare number below
        {"input_tokens": 1e30},
    ]
    lines = [record_to_json(r) for r in good]
    for n, changes in enumerate(poisons, start=100):
        line = {**orjson.loads(record_to_json(make_record(n))), **changes}
        lines.append(orjson.dumps(line).replace(b'"10000000000000000000"', b"10000000000000000000"))
    lines.append(b'{"id": "rec-000000999", "started_at": "torn')
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "ledger-0000000000000001.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    writer = LedgerWriter(engine, Spool(spool_dir), retry_initial_s=0.01)
    await writer.start()
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()
    stored = set(await ledger_ids(engine))
    dead = set(await rejected_ids(engine))
    assert stored == {r.id for r in good} | {"rec-000000100", "rec-000000101", "rec-000000102"}
    assert dead == {"rec-000000103", "rec-000000104", "rec-000000105"}
    assert not list(spool_dir.glob("ledger-*.jsonl"))
    assert list(spool_dir.glob("*.corrupt"))  # the unreadable line is kept for a human


async def test_the_writer_survives_an_unexpected_error_and_counts_it(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    writer = LedgerWriter(
        engine, Spool(tmp_path), flush_interval_ms=5, retry_initial_s=0.01, registry=registry
    )
    real_settle = writer._settle
    failures = iter([True])

    def settle_once_broken() -> None:
        if next(failures, False):
            raise RuntimeError("a bug in the writer")
        real_settle()

    writer._settle = settle_once_broken  # type: ignore[method-assign]
    await writer.start()
    for n in range(10):
        writer.submit(make_record(n))
    await asyncio.wait_for(writer.flush(), 10)
    for n in range(10, 20):
        writer.submit(make_record(n))
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()
    assert sorted(await ledger_ids(engine)) == [make_record(n).id for n in range(20)]
    assert sample(registry, "openai_meter_ledger_write_errors_total") >= 1
    assert sample(registry, "openai_meter_ledger_pending_records") == 0


async def test_refusals_with_the_database_down_wait_in_the_file_beside_the_spool(
    database_url: str, tmp_path: Path
) -> None:
    down = create_engine("postgresql://postgres@127.0.0.1:9/nowhere", connect_timeout_s=0.5)
    spool_dir = tmp_path / "spool"
    writer = LedgerWriter(down, Spool(spool_dir), drain_timeout_s=2, write_timeout_s=1)
    await writer.start()
    writer.submit(make_record(1, input_tokens=-5))
    writer.submit(make_record(2))
    await asyncio.sleep(0.05)
    await writer.stop()
    await down.dispose()
    assert (spool_dir / "rejected.jsonl").read_bytes().count(b"\n") == 1

    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        writer = LedgerWriter(engine, Spool(spool_dir), retry_initial_s=0.01)
        await writer.start()
        await asyncio.wait_for(writer.flush(), 10)
        await writer.stop()
        assert await ledger_ids(engine) == ["rec-000000002"]
        (row,) = await list_rejected(engine)
        assert row.record_id == "rec-000000001" and "input_tokens" in row.error
        assert not (spool_dir / "rejected.jsonl").exists()
    finally:
        await engine.dispose()


async def test_stall_is_not_ready_but_a_plain_outage_is(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    class DownDatabase:
        async def __call__(self, batch: Sequence[UsageRecord]) -> int:
            raise ConnectionError("database unreachable")

    # Outage with a healthy spool: records leave memory at once, the ledger is progressing.
    writer = LedgerWriter(
        engine, Spool(tmp_path / "a"), flush_interval_ms=5, batch_writer=DownDatabase()
    )
    await writer.start()
    for n in range(5):
        writer.submit(make_record(n))
    await asyncio.sleep(0.3)
    assert not writer.stalled(0.1)
    await writer.stop()

    class FullDisk(Spool):
        def append(self, records: object) -> int:
            raise OSError(28, "No space left on device")

    # The spool refuses too: records stay in memory with no progress -> stalled.
    writer = LedgerWriter(
        engine,
        FullDisk(tmp_path / "b"),
        flush_interval_ms=5,
        retry_initial_s=0.01,
        batch_writer=DownDatabase(),
    )
    await writer.start()
    writer.submit(make_record(1))
    await asyncio.sleep(0.3)
    assert writer.stalled(0.1)
    assert not writer.stalled(60)
    await writer.stop()  # never raises, even now; the journal keeps the record
    (journal,) = (tmp_path / "b").glob("journal-*.jsonl")
    assert b"rec-000000001" in journal.read_bytes()


# -- hypothesis: arbitrary records never stop the writer, on both backends ---------------------

_ids = itertools.count()


@given(records=st.lists(any_record(), min_size=1, max_size=25))
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_records_end_in_exactly_one_of_ledger_or_dead_letter(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, records: list[UsageRecord]
) -> None:
    asyncio.run(_exactly_once(database_url, tmp_path_factory.mktemp("spool"), records))


async def _exactly_once(database_url: str, spool_dir: Path, records: list[UsageRecord]) -> None:
    # Unique, valid ids per example unless the example deliberately broke the id.
    for record in records:  # only ids the ledger cannot take are left as drawn
        rid = record.id
        if isinstance(rid, str) and 0 < len(rid) <= 64 and clean_text(rid) == rid:
            record.id = f"h-{next(_ids)}"
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        before_dead = len(await rejected_ids(engine))
        registry = CollectorRegistry()
        writer = LedgerWriter(
            engine, Spool(spool_dir), batch_size=4, flush_interval_ms=1, registry=registry
        )
        await writer.start()
        for record in records:
            writer.submit(record)
        await asyncio.wait_for(writer.flush(), 30)
        await writer.stop()
        assert not writer.stalled(0)
        assert sample(registry, "openai_meter_ledger_pending_records") == 0
        async with engine.connect() as conn:
            stored = set((await conn.execute(select(usage_records.c.id))).scalars())
            dead = list((await conn.execute(select(ledger_rejected.c.record_id))).scalars())
            await conn.execute(text("SELECT 1"))
        mine = [r.id for r in records if isinstance(r.id, str) and r.id.startswith("h-")]
        for rid in mine:
            assert (rid in stored) != (rid in dead), rid  # exactly one of the two
        anonymous = len(records) - len(mine)  # broken ids: dead-lettered without a record_id
        assert len(dead) - before_dead == len([r for r in mine if r in dead]) + anonymous
    finally:
        await engine.dispose()
