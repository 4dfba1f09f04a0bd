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

from pricing.usage import TOKEN_FIELDS
from storage.record import UsageRecord
from storage.rollup import ROLLUP_KEY, ROLLUP_SUMS
from storage.sqlite_rows import COLUMNS, SQLITE_INSERT, sqlite_row

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_LOOKUP_CHUNK: Final = 500
_I_ID, _I_START, _I_TEAM, _I_MODEL, _I_TIER, _I_ENDPOINT, _I_COST, _I_SOURCE = (
    COLUMNS.index(name)
    for name in (
        "id",
        "started_at",
        "team",
        "model",
        "service_tier",
        "endpoint",
        "cost_usd",
        "usage_source",
    )
)
_I_TOKENS: Final = tuple(COLUMNS.index(name) for name in TOKEN_FIELDS)
# usage_daily's sums in ROLLUP_SUMS order: requests, the tokens, cost, unpriced, estimated.
_S_COST, _S_UNPRICED, _S_ESTIMATED = (
    ROLLUP_SUMS.index(name) for name in ("cost_usd", "unpriced_requests", "estimated_requests")
)
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
    """:func:`write_rows` of the records' rows."""
    return write_rows(conn, [sqlite_row(record) for record in records])


def write_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert the rows (:mod:`storage.sqlite_rows`) whose id is not in the ledger and add exactly
    those to the rollup. Within a batch the last row of an id wins, as in ``insert_records``.

    Returns how many were new; one transaction (``BEGIN IMMEDIATE``: the write lock up front, so a
    busy database waits here instead of failing the commit).
    """
    by_id = {row[_I_ID]: row for row in rows}
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
        fresh = [row for row_id, row in by_id.items() if row_id not in existing]
        conn.executemany(SQLITE_INSERT, fresh)
        conn.executemany(ROLLUP_UPSERT, rollup_rows(fresh))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(fresh)


def rollup_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """:func:`storage.rollup.rollup_deltas` computed from SQLite rows: the day is the UTC text's
    date, money is already integer units (exact sums). Sorted by key, as the deltas are."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = (
            row[_I_START][:10],
            row[_I_TEAM],
            row[_I_MODEL] or "",
            row[_I_TIER] or "",
            row[_I_ENDPOINT],
        )
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = [0] * len(ROLLUP_SUMS)
        acc[0] += 1
        for slot, index in enumerate(_I_TOKENS, start=1):
            acc[slot] += row[index]
        cost = row[_I_COST]
        if cost is None:
            acc[_S_UNPRICED] += 1
        else:
            acc[_S_COST] += cost
        if row[_I_SOURCE] == "estimated":
            acc[_S_ESTIMATED] += 1
    return [(*key, *sums[key]) for key in sorted(sums)]
