"""One batch into a SQLite ledger with the plain ``sqlite3`` driver: raw rows and their rollup in one
transaction, idempotent on id — what :func:`storage.ledger.insert_records` does through SQLAlchemy,
without it (this runs in the ledger's writer process, :mod:`storage.writer_main`).

Same rows (:mod:`storage.sqlite_rows`), same rollup (:func:`storage.rollup.rollup_deltas` of the rows
actually inserted, upserted in key order), same connection settings (:func:`apply_pragmas`, which
the SQLAlchemy engine uses too); ``tests/storage/test_writer_process.py`` checks that both paths leave
identical tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from storage.money import money_to_units
from storage.record import UsageRecord
from storage.rollup import ROLLUP_KEY, ROLLUP_SUMS, rollup_deltas
from storage.sqlite_rows import SQLITE_INSERT, sqlite_row

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_LOOKUP_CHUNK: Final = 500
_ROLLUP_COLUMNS: Final = (*ROLLUP_KEY, *ROLLUP_SUMS)
ROLLUP_UPSERT: Final = (
    f"INSERT INTO usage_daily ({', '.join(_ROLLUP_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _ROLLUP_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in ROLLUP_SUMS)
)


def apply_pragmas(conn: Any) -> None:
    """WAL, a durable commit, a long busy timeout, foreign keys: every ledger connection."""
    cursor = conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives a power cut too (one fsync per batch, not per record).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def connect(path: str) -> sqlite3.Connection:
    """A connection that never opens a database that is not there (the parent created it)."""
    conn = sqlite3.connect(
        f"file:{path}?mode=rw",
        uri=True,
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # transactions are explicit
    )
    apply_pragmas(conn)
    return conn


def write_batch(conn: sqlite3.Connection, records: Sequence[UsageRecord]) -> int:
    """Insert the records whose id is not in the ledger and add exactly those to the rollup.

    Returns how many were new; one transaction (``BEGIN IMMEDIATE``: the write lock up front, so a
    busy database waits here instead of failing the commit).
    """
    by_id = {record.id: record for record in records}
    if not by_id:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = list(by_id)
        existing: set[str] = set()
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            found = conn.execute(
                f"SELECT id FROM usage_records WHERE id IN ({', '.join('?' for _ in chunk)})",
                chunk,
            )
            existing.update(row[0] for row in found)
        fresh = [record for record in by_id.values() if record.id not in existing]
        conn.executemany(SQLITE_INSERT, [sqlite_row(record) for record in fresh])
        conn.executemany(ROLLUP_UPSERT, [_rollup_row(delta) for delta in rollup_deltas(fresh)])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(fresh)


def _rollup_row(delta: dict[str, Any]) -> tuple[Any, ...]:
    row = dict(delta, day=delta["day"].isoformat(), cost_usd=money_to_units(delta["cost_usd"]))
    return tuple(row[column] for column in _ROLLUP_COLUMNS)
