"""Two writers (two engines, as two replicas) on one PostgreSQL database: rollups stay exact."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.engine import create_engine
from storage.migrate import upgrade
from storage.schema import usage_daily, usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import make_record

pytestmark = pytest.mark.postgres


async def test_two_replicas_write_one_database(postgres_url: str, tmp_path: Path) -> None:
    engines = [create_engine(postgres_url) for _ in range(2)]
    await upgrade(engines[0])
    await upgrade(engines[1])  # both replicas upgrade on start: the second is a no-op
    writers = [
        LedgerWriter(e, Spool(tmp_path / f"spool{i}"), batch_size=50, flush_interval_ms=5)
        for i, e in enumerate(engines)
    ]
    for w in writers:
        await w.start()
    # Both replicas write into the same rollup rows (same day/team/model) at the same time.
    records = [make_record(n, team=("a", "b")[n % 2]) for n in range(4000)]
    for n, record in enumerate(records):
        writers[n % 2].submit(record)
        if n % 200 == 199:
            await asyncio.sleep(0)
    await asyncio.gather(*(w.flush() for w in writers))
    for w in writers:
        await w.stop()
    try:
        async with engines[0].connect() as conn:
            raw = (
                await conn.execute(
                    select(usage_records.c.team, func.count(), func.sum(usage_records.c.cost_usd))
                    .group_by(usage_records.c.team)
                    .order_by(usage_records.c.team)
                )
            ).all()
            rolled = (
                await conn.execute(
                    select(
                        usage_daily.c.team,
                        func.sum(usage_daily.c.requests),
                        func.sum(usage_daily.c.cost_usd),
                    )
                    .group_by(usage_daily.c.team)
                    .order_by(usage_daily.c.team)
                )
            ).all()
    finally:
        for e in engines:
            await e.dispose()
    expected = [
        (
            team,
            2000,
            sum((r.cost_usd for r in records if r.team == team and r.cost_usd), Decimal(0)),
        )
        for team in ("a", "b")
    ]
    assert [tuple(r) for r in raw] == expected
    assert [(t, int(n), c) for t, n, c in rolled] == expected
