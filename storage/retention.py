"""``ledger.retention_days``: delete raw rows older than the window; the daily rollup is kept."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.schema import usage_records

PRUNE_CHUNK = 10_000


def cutoff(now: datetime, retention_days: int) -> datetime:
    """Midnight UTC ``retention_days`` days before ``now``'s day: whole days go, never part of one."""
    day = now.astimezone(UTC).date() - timedelta(days=retention_days)
    return datetime.combine(day, time(0), tzinfo=UTC)


async def prune(engine: AsyncEngine, *, before: datetime, chunk: int = PRUNE_CHUNK) -> int:
    """Delete raw rows started before ``before`` in chunks (short transactions); returns how many."""
    total = 0
    while True:
        ids = (
            select(usage_records.c.id)
            .where(usage_records.c.started_at < before)
            .limit(chunk)
            .scalar_subquery()
        )
        async with engine.begin() as conn:
            result = await conn.execute(delete(usage_records).where(usage_records.c.id.in_(ids)))
        total += result.rowcount
        if result.rowcount < chunk:
            return total
