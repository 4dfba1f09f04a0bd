"""The writer: batches reach the database, trouble goes to the spool, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger import write_batch
from storage.record import UsageRecord
from storage.schema import usage_daily, usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import make_record, random_cost


class FlakyDatabase:
    """Wraps the real batch write; fails while ``down`` is set (like a dead connection)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.down = False
        self.batches: list[list[str]] = []

    async def __call__(self, batch: Sequence[UsageRecord]) -> int:
        if self.down:
            raise ConnectionError("database unreachable")
        self.batches.append([r.id for r in batch])
        return await write_batch(self.engine, batch)


async def ledger_totals(engine: AsyncEngine) -> tuple[int, int, Decimal, int, Decimal]:
    async with engine.connect() as conn:
        raw = (
            await conn.execute(
                select(
                    func.count(),
                    func.count(func.distinct(usage_records.c.id)),
                    func.sum(usage_records.c.cost_usd),
                )
            )
        ).one()
        rolled = (
            await conn.execute(
                select(func.sum(usage_daily.c.requests), func.sum(usage_daily.c.cost_usd))
            )
        ).one()
    return raw[0], raw[1], raw[2] or Decimal(0), int(rolled[0] or 0), rolled[1] or Decimal(0)


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_hundred_thousand_records_exact_counts_and_money(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rng = random.Random(5)
    records = [make_record(n, cost_usd=random_cost(rng)) for n in range(100_000)]
    registry = CollectorRegistry()
    writer = LedgerWriter(
        engine, Spool(tmp_path / "spool"), batch_size=2000, queue_size=200_000, registry=registry
    )
    await writer.start()
    for record in records:
        writer.submit(record)
    await writer.flush()
    await writer.stop()
    expected = sum((r.cost_usd for r in records if r.cost_usd is not None), Decimal(0))
    assert await ledger_totals(engine) == (100_000, 100_000, expected, 100_000, expected)
    assert sample(registry, "openai_meter_ledger_written_records_total") == 100_000
    assert sample(registry, "openai_meter_ledger_pending_records") == 0
    assert sample(registry, "openai_meter_ledger_spooled_records_total") == 0


async def test_batches_respect_batch_size_and_flush_interval(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    db = FlakyDatabase(engine)
    writer = LedgerWriter(
        engine, Spool(tmp_path), batch_size=10, flush_interval_ms=50, batch_writer=db
    )
    await writer.start()
    for n in range(25):
        writer.submit(make_record(n))
    await writer.flush()
    writer.submit(make_record(99))  # a lone record still goes out after flush_interval
    await asyncio.wait_for(writer.flush(), 2)
    await writer.stop()
    assert [len(b) for b in db.batches] == [10, 10, 5, 1]


async def test_outage_spools_in_order_and_replays_exactly_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    db = FlakyDatabase(engine)
    registry = CollectorRegistry()
    writer = LedgerWriter(
        engine,
        Spool(tmp_path / "spool"),
        batch_size=7,
        flush_interval_ms=5,
        retry_initial_s=0.02,
        retry_max_s=0.05,
        batch_writer=db,
        registry=registry,
    )
    await writer.start()
    for n in range(20):
        writer.submit(make_record(n))
    await writer.flush()
    db.down = True
    for n in range(20, 120):
        writer.submit(make_record(n))
        if n % 10 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert writer.degraded
    assert sample(registry, "openai_meter_ledger_spooled_records_total") > 0
    assert sample(registry, "openai_meter_ledger_write_errors_total") > 0
    assert sample(registry, "openai_meter_ledger_pending_records") > 0
    db.down = False
    await asyncio.wait_for(writer.flush(), 5)
    await writer.stop()
    written = [i for batch in db.batches for i in batch]
    assert written == [make_record(n).id for n in range(120)]  # replayed in submit order
    assert (await ledger_totals(engine))[:2] == (120, 120)
    assert sample(registry, "openai_meter_ledger_pending_records") == 0
    assert not list((tmp_path / "spool").glob("ledger-*.jsonl"))


async def test_full_queue_spills_to_spool_without_waiting(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    writer = LedgerWriter(engine, Spool(tmp_path), queue_size=10, batch_size=10, registry=registry)
    await writer.start()
    for n in range(50):  # no await in between: the consumer cannot run, the queue overflows
        writer.submit(make_record(n))
    assert sample(registry, "openai_meter_ledger_spooled_records_total") == 40
    assert sample(registry, "openai_meter_ledger_pending_records") == 50
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()
    assert (await ledger_totals(engine))[:2] == (50, 50)


async def test_stop_with_database_down_keeps_everything_spooled_for_next_start(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    db = FlakyDatabase(engine)
    db.down = True
    writer = LedgerWriter(
        engine, Spool(tmp_path), batch_size=5, flush_interval_ms=5, batch_writer=db
    )
    await writer.start()
    for n in range(23):
        writer.submit(make_record(n))
    await writer.stop()
    writer.submit(make_record(23))  # after stop: still not dropped
    assert (await ledger_totals(engine))[0] == 0

    spool = Spool(tmp_path)
    assert spool.pending == 24
    restarted = LedgerWriter(engine, spool, retry_initial_s=0.01)
    await restarted.start()
    await asyncio.wait_for(restarted.flush(), 5)
    await restarted.stop()
    assert (await ledger_totals(engine))[:2] == (24, 24)


async def test_replay_after_a_batch_that_committed_but_looked_failed(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A timeout after commit: the batch is spooled and replayed, and the rollup is not doubled."""
    calls = 0

    async def commit_then_fail(batch: Sequence[UsageRecord]) -> int:
        nonlocal calls
        calls += 1
        inserted = await write_batch(engine, batch)
        if calls == 1:
            raise TimeoutError("reply lost after commit")
        return inserted

    writer = LedgerWriter(
        engine,
        Spool(tmp_path),
        flush_interval_ms=5,
        retry_initial_s=0.01,
        batch_writer=commit_then_fail,
    )
    await writer.start()
    records = [make_record(n) for n in range(30)]
    for record in records:
        writer.submit(record)
    await asyncio.wait_for(writer.flush(), 5)
    await writer.stop()
    expected = sum((r.cost_usd for r in records if r.cost_usd is not None), Decimal(0))
    assert calls >= 2
    assert await ledger_totals(engine) == (30, 30, expected, 30, expected)
