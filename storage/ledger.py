"""One batch into the ledger: raw rows and their rollup, in one transaction, idempotent on id.

PostgreSQL does both in one statement (:data:`storage.pg_write.INSERT_WITH_ROLLUP`); SQLite inserts
through :mod:`storage.bulk` and upserts :func:`storage.rollup.rollup_deltas` of the rows inserted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import pg_write
from storage.bulk import insert_new
from storage.record import UsageRecord
from storage.rollup import rollup_deltas
from storage.schema import ROLLUP_KEY, ROLLUP_SUMS, usage_daily


async def insert_records(conn: AsyncConnection, records: Sequence[UsageRecord]) -> int:
    """Insert the records not already in the ledger and add exactly those to the rollup.

    Returns how many were new. Replaying the same records is harmless: ids already present are
    skipped (``ON CONFLICT DO NOTHING``) and only inserted rows reach ``usage_daily``.
    Runs inside the caller's transaction.
    """
    if not records:
        return 0
    by_id = {record.id: record for record in records}
    if conn.dialect.name == "postgresql":  # raw rows + rollup in one statement
        batch = pg_write.batch_json(list(by_id.values()))
        result = await conn.exec_driver_sql(pg_write.INSERT_WITH_ROLLUP, (batch,))
        return int(result.scalar_one())
    inserted = [by_id[row_id] for row_id in await insert_new(conn, list(by_id.values()))]
    deltas = rollup_deltas(inserted)
    if deltas:
        await conn.execute(_rollup_upsert(conn.dialect.name), deltas)
    return len(inserted)


@functools.cache
def _rollup_upsert(dialect: str) -> Insert:
    """The rollup upsert, built once per dialect (it used to be rebuilt for every batch)."""
    insert: Any = (
        postgresql.insert(usage_daily) if dialect == "postgresql" else sqlite.insert(usage_daily)
    )
    stmt: Insert = insert.on_conflict_do_update(
        index_elements=list(ROLLUP_KEY),
        set_={col: usage_daily.c[col] + insert.excluded[col] for col in ROLLUP_SUMS},
    )
    return stmt


async def write_batch(engine: AsyncEngine, records: Sequence[UsageRecord]) -> int:
    """``insert_records`` in its own transaction."""
    async with engine.begin() as conn:
        return await insert_records(conn, records)
