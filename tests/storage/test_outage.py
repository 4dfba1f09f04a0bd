"""PostgreSQL going away under load (a relay cut and restored): every record lands exactly once."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from storage.engine import create_engine
from storage.migrate import upgrade
from storage.schema import usage_daily, usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import make_record
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.postgres


async def test_database_cut_and_restored_under_load(postgres_url: str, tmp_path: Path) -> None:
    url = make_url(postgres_url)
    direct = create_engine(url.render_as_string(hide_password=False))
    await upgrade(direct)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432)
    await relay.start()
    via_relay = create_engine(
        url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False),
        connect_timeout_s=1.0,
    )
    registry = CollectorRegistry()
    writer = LedgerWriter(
        via_relay,
        Spool(tmp_path),
        batch_size=100,
        flush_interval_ms=20,
        queue_size=500,
        write_timeout_s=2.0,
        retry_initial_s=0.1,
        retry_max_s=0.3,
        registry=registry,
    )
    await writer.start()
    records = [make_record(n) for n in range(6000)]
    try:
        for n, record in enumerate(records):
            writer.submit(record)
            if n % 50 == 49:
                await asyncio.sleep(0.01)  # ~5,000 records/s
            if n == 1500:
                relay.cut()
            if n == 4000:
                assert writer.degraded
                relay.restore()
        await asyncio.wait_for(writer.flush(), 60)
        await writer.stop()
    finally:
        await relay.stop()
        await via_relay.dispose()
    try:
        async with direct.connect() as conn:
            count, distinct, cost = (
                await conn.execute(
                    select(
                        func.count(),
                        func.count(func.distinct(usage_records.c.id)),
                        func.sum(usage_records.c.cost_usd),
                    )
                )
            ).one()
            rolled = (await conn.execute(select(func.sum(usage_daily.c.requests)))).scalar()
    finally:
        await direct.dispose()
    expected = sum((r.cost_usd for r in records if r.cost_usd is not None), Decimal(0))
    assert (count, distinct, cost, int(rolled)) == (6000, 6000, expected, 6000)
    assert (registry.get_sample_value("openai_meter_ledger_spooled_records_total") or 0) > 0
    assert (registry.get_sample_value("openai_meter_ledger_write_errors_total") or 0) > 0
    assert registry.get_sample_value("openai_meter_ledger_pending_records") == 0
