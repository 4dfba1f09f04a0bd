"""Rejected spend is visible in reports: dead-lettered records beside the total, never in it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.admin_api import load_report
from proxy.admin.reporting import Window, to_json_obj, to_table
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import BASE_TIME, make_record
from tests.support.refusing_db import refuse_poison


async def test_report_shows_rejected_spend_beside_the_total(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await refuse_poison(engine)
    writer = LedgerWriter(engine, Spool(tmp_path))
    await writer.start()
    writer.submit(make_record(1, team="search"))
    writer.submit(make_record(2, team="search", model="poison", cost_usd=Decimal("1.25")))
    writer.submit(make_record(3, team="ads", input_tokens=-1))  # refused before the database
    await asyncio.wait_for(writer.flush(), 10)
    await writer.stop()
    window = Window(BASE_TIME - timedelta(days=1), BASE_TIME + timedelta(days=1))

    report = await load_report(engine, window, ("team",))
    data = to_json_obj(report)
    assert data["total"]["requests"] == 1  # the ledger's rows only
    assert data["rejected"] == {"requests": 2, "cost_usd": "1.2500270003"}
    assert "rejected (dead-lettered, not in the total): 2 calls" in to_table(report)

    search = to_json_obj(await load_report(engine, window, (), team="search"))
    assert search["rejected"] == {"requests": 1, "cost_usd": "1.250000"}
    later = Window(BASE_TIME + timedelta(days=1), BASE_TIME + timedelta(days=2))
    assert "rejected" not in to_json_obj(await load_report(engine, later, ()))
