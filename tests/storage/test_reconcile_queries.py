"""Ledger reads for reconciliation on both backends: per day x project x model sums (exact money),
outcome counts, projects seen, and the dead-letter store looked up rather than assumed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.reconcile import (
    dead_letters_by_day,
    latest_reconciliation,
    ledger_groups,
    projects_seen,
    save_reconciliation,
)
from storage.schema import ledger_rejected
from tests.support.ledger_records import BASE_TIME, make_record

SINCE = datetime(2026, 11, 3, tzinfo=UTC)
UNTIL = datetime(2026, 11, 5, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_groups_sum_exactly_per_day_project_model(engine: AsyncEngine) -> None:
    records = [
        make_record(1, project="proj_a", cost_usd=Decimal("0.0000000001")),
        make_record(2, project="proj_a", cost_usd=Decimal("0.1234567891")),
        make_record(3, project="proj_a", cost_usd=None, model="gpt-mystery"),
        make_record(4, project=None, usage_source="estimated", outcome="client_disconnect"),
        make_record(5, project="proj_a", outcome="upstream_timeout", usage_source="none",
                    input_tokens=0, output_tokens=0, cost_usd=None),
        make_record(6, project="proj_a", model=None, model_requested=None),  # not a model call
        make_record(7, project="proj_a", started_at=BASE_TIME + timedelta(days=1)),
        make_record(8, project="proj_b", started_at=BASE_TIME + timedelta(days=5)),  # outside
    ]  # fmt: skip
    await write_batch(engine, records)
    groups = {
        (g["day"], g["project"], g["model"]): g for g in await ledger_groups(engine, SINCE, UNTIL)
    }
    day = date(2026, 11, 3)
    main = groups[(day, "proj_a", "gpt-4o-mini-2024-07-18")]
    assert main["requests"] == 2  # the timed-out call without usage is not billable
    assert main["timeouts"] == 1
    assert main["cost"] == Decimal("0.1234567892")
    assert main["input_tokens"] == records[0].input_tokens + records[1].input_tokens
    mystery = groups[(day, "proj_a", "gpt-mystery")]
    assert mystery["unpriced"] == 1 and mystery["cost"] == 0
    none = groups[(day, None, "gpt-4o-mini-2024-07-18")]
    assert none["estimated"] == 1 and none["disconnects"] == 1
    assert (date(2026, 11, 4), "proj_a", "gpt-4o-mini-2024-07-18") in groups
    assert len(groups) == 4
    assert await projects_seen(engine, SINCE, UNTIL) == {"proj_a", None}


async def test_dead_letters_are_counted_on_their_calls_day(engine: AsyncEngine) -> None:
    """``ledger_rejected`` rows count on the call's day; a row whose record had no valid start
    counts on the day it was refused."""

    def row(n: int, started: datetime | None, seen: datetime) -> dict[str, object]:
        return {
            "record_id": f"r{n}",
            "row": "{}",
            "error": "refused",
            "first_seen_at": seen,
            "retries": 0,
            "started_at": started,
        }

    later = UNTIL + timedelta(days=3)
    async with engine.begin() as conn:
        await conn.execute(
            ledger_rejected.insert(),
            [
                row(1, SINCE + timedelta(hours=1), later),
                row(2, SINCE + timedelta(hours=2), later),
                row(3, SINCE + timedelta(days=1), later),
                row(4, None, SINCE + timedelta(days=1, hours=3)),
                row(5, UNTIL + timedelta(days=1), SINCE),  # its call is outside the window
            ],
        )
    assert await dead_letters_by_day(engine, SINCE, UNTIL) == {
        date(2026, 11, 3): 2,
        date(2026, 11, 4): 2,
    }
    assert await dead_letters_by_day(engine, UNTIL, UNTIL + timedelta(days=1)) == {}


async def test_the_latest_reconciliation_is_read_back_exactly(engine: AsyncEngine) -> None:
    assert await latest_reconciliation(engine) is None
    for n, ratio in enumerate((Decimal("0.5"), None)):
        await save_reconciliation(
            engine,
            {
                "id": f"run{n}",
                "run_at": SINCE + timedelta(hours=n),
                "since": date(2026, 11, 1),
                "until": date(2026, 11, 4),
                "billed_usd": Decimal("12.3456789012"),
                "ledger_usd": Decimal("0.0000000001"),
                "captured_ratio": ratio,
                "ok": n == 0,
                "result": {"ok": n == 0, "total": {"billed_usd": "12.3456789012"}},
            },
        )
    latest = await latest_reconciliation(engine)
    assert latest is not None and latest["id"] == "run1"
    assert latest["billed_usd"] == Decimal("12.3456789012")
    assert latest["captured_ratio"] is None and latest["result"]["ok"] is False
