"""Persistent dedupe of retrieved objects (responses, batches, fine-tuning jobs): meter each once.

``first_time(kind, object_id)`` inserts ``(kind, object_id)`` with ``ON CONFLICT DO NOTHING`` and
reports whether this call inserted it -- atomic in the database, so it holds across replicas on
PostgreSQL (the primary key decides; exactly one caller sees True).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.schema import dedupe_objects


class SqlDedupeStore:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    async def first_time(self, kind: str, object_id: str) -> bool:
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(dedupe_objects)
            .values(kind=kind, object_id=object_id, first_seen_at=self._clock())
            .on_conflict_do_nothing(index_elements=["kind", "object_id"])
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    async def forget_before(self, moment: datetime) -> int:
        """Drop entries first seen before ``moment`` (retention); returns how many."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(dedupe_objects).where(dedupe_objects.c.first_seen_at < moment)
            )
        return result.rowcount
