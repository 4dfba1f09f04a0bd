"""Fast, idempotent multi-row insert of ledger rows, one path per dialect.

SQLAlchemy's generic ``insert().values(...)`` spends ~0.3 ms of Python per 40-column row; these
paths bind plain driver values instead:

* PostgreSQL: the batch as one JSON parameter, ``INSERT … SELECT … FROM
  jsonb_array_elements($1::jsonb) ON CONFLICT (id) DO NOTHING RETURNING id`` (one round trip, any
  batch size; see :mod:`storage.pg_write`, which also has the raw-rows-plus-rollup statement the
  writer uses).
* SQLite: look up which ids exist, then ``executemany`` an ``INSERT OR IGNORE`` of the others. The
  ledger has one writer per SQLite file (the spool lock), so the look-up and insert see the same
  table.

Both return the ids actually inserted, so the caller adds exactly those to the rollup. Values are
encoded as :mod:`storage.types` would (UTC times; money NUMERIC on PostgreSQL, integer 1e-10 USD on
SQLite; JSON text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from storage import pg_write
from storage.record import UsageRecord
from storage.sqlite_rows import SQLITE_INSERT, sqlite_row

_SQLITE_LOOKUP_CHUNK: Final = 500
# One executemany of a whole flush (160-500 rows) kept the event loop's thread from running for
# 1.4-1.5 ms (median longest gap per 160-row flush) while aiosqlite's thread bound the rows, and
# calls being served waited (tail latency, issue 16). Slices of 64 rows in the same transaction:
# 0.63 ms, for ~2 us more CPU per record (one more round trip to the thread per slice).
_SQLITE_INSERT_SLICE: Final = 64


async def insert_new(conn: AsyncConnection, records: Sequence[UsageRecord]) -> list[str]:
    """Insert records whose id is not in the ledger; returns the ids inserted."""
    if conn.dialect.name == "postgresql":
        return await _insert_postgresql(conn, records)
    if conn.dialect.name == "sqlite":
        return await _insert_sqlite(conn, records)
    raise ValueError(f"unsupported dialect {conn.dialect.name}")


async def _insert_postgresql(conn: AsyncConnection, records: Sequence[UsageRecord]) -> list[str]:
    result = await conn.exec_driver_sql(
        pg_write.INSERT_RETURNING_IDS, (pg_write.batch_json(records),)
    )
    return [row[0] for row in result.all()]


async def _insert_sqlite(conn: AsyncConnection, records: Sequence[UsageRecord]) -> list[str]:
    ids = [r.id for r in records]
    existing: set[str] = set()
    for start in range(0, len(ids), _SQLITE_LOOKUP_CHUNK):
        chunk = ids[start : start + _SQLITE_LOOKUP_CHUNK]
        placeholders = ", ".join("?" for _ in chunk)
        result = await conn.exec_driver_sql(
            f"SELECT id FROM usage_records WHERE id IN ({placeholders})", tuple(chunk)
        )
        existing.update(row[0] for row in result.all())
    fresh = [r for r in records if r.id not in existing]
    for start in range(0, len(fresh), _SQLITE_INSERT_SLICE):
        rows = [sqlite_row(r) for r in fresh[start : start + _SQLITE_INSERT_SLICE]]
        await conn.exec_driver_sql(SQLITE_INSERT, rows)
    return [r.id for r in fresh]
