"""Ledger rows for the FOCUS export: every call with usage or a cost in ``[since, until)``,
streamed (a month of a busy ledger does not have to fit in memory), with the columns the export
reads. Money stays exact (:class:`~decimal.Decimal`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.schema import TOKEN_COLUMNS, usage_records

EXPORT_COLUMNS: Final[tuple[str, ...]] = (
    "started_at",
    "organization",
    "project",
    "model",
    "model_requested",
    "service_tier",
    "team",
    "tags",
    *TOKEN_COLUMNS,
    "units",
    "usage_source",
    "cost_usd",
    "price_ref",
)


async def billable_rows(
    engine: AsyncEngine, since: datetime, until: datetime, *, batch: int = 5000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Batches of rows (one await per batch: per-row async iteration costs ~3x more)."""
    c = usage_records.c
    stmt = (
        select(*(c[name] for name in EXPORT_COLUMNS))
        .where(c.started_at >= since, c.started_at < until)
        .where(or_(c.usage_source != "none", c.cost_usd.is_not(None)))
        .execution_options(yield_per=batch)
    )
    async with engine.connect() as conn:
        result = await conn.stream(stmt)
        async for rows in result.mappings().partitions(batch):
            yield [dict(row) for row in rows]


async def ledger_cost_sum(engine: AsyncEngine, since: datetime, until: datetime) -> Decimal:
    """The ledger's own SUM(cost_usd) over the window (what BilledCost must add up to)."""
    c = usage_records.c
    stmt = select(func.sum(c.cost_usd)).where(c.started_at >= since, c.started_at < until)
    async with engine.connect() as conn:
        total = (await conn.execute(stmt)).scalar_one()
    return total if total is not None else Decimal(0)
