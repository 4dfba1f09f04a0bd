"""The dead-letter store: records the ledger cannot take, kept with the reason, never dropped.

A refused record (see :mod:`storage.bounds`, or a row the database still refused alone after the
writer split its batch) is appended at once to ``<spool_dir>/rejected.jsonl`` -- one ``write``, so a
killed process keeps it; fsync'd with the spool -- and moved into the ``ledger_rejected`` table the
next time the database answers (idempotent on ``record_id``). While the database is down the file
*is* the dead-letter store. ``openai-meter db rejected list`` shows the table; ``… retry`` re-inserts
rows (after a fix: a wider column, a corrected record) through the same bounding and batch path.

Each line: ``{"record_id", "row", "error", "first_seen_at", "started_at", "team", "cost_usd"}``,
ASCII JSON (``row`` is :func:`storage.bounds.row_json`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Insert, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.bounds import Refused, bound_record, bound_text, clean_text, row_json
from storage.fsync import fsync_and_close
from storage.ledger import write_batch
from storage.record import UsageRecord
from storage.rows import record_from_json
from storage.schema import REJECTED_ERROR_WIDTH, ledger_rejected
from storage.types import MONEY_MAX

log = logging.getLogger(__name__)

FILE_NAME: Final = "rejected.jsonl"
_FLUSHING: Final = "rejected.flushing.jsonl"
_CHUNK: Final = 200


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    record_id: str | None
    row: str
    error: str
    first_seen_at: datetime
    started_at: datetime | None
    team: str | None
    cost_usd: Decimal | None

    @classmethod
    def of(cls, record: UsageRecord, error: str, now: datetime | None = None) -> RejectedEntry:
        rid = getattr(record, "id", None)
        started = getattr(record, "started_at", None)
        team = getattr(record, "team", None)
        cost = getattr(record, "cost_usd", None)
        return cls(
            record_id=rid
            if isinstance(rid, str) and 0 < len(rid) <= 64 and clean_text(rid) == rid
            else None,
            row=row_json(record),
            error=bound_text(error, REJECTED_ERROR_WIDTH),
            first_seen_at=now or datetime.now(UTC),
            started_at=started
            if isinstance(started, datetime) and started.utcoffset() is not None
            else None,
            team=bound_text(team, 128) if isinstance(team, str) else None,
            cost_usd=cost
            if isinstance(cost, Decimal) and cost.is_finite() and abs(cost) <= MONEY_MAX
            else None,
        )

    def to_line(self) -> bytes:
        data = {
            "record_id": self.record_id,
            "row": self.row,
            "error": self.error,
            "first_seen_at": self.first_seen_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "team": self.team,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
        }
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> RejectedEntry:
        data = json.loads(line)
        started = data.get("started_at")
        cost = data.get("cost_usd")
        return cls(
            record_id=data.get("record_id"),
            row=str(data["row"]),
            error=str(data["error"]),
            first_seen_at=datetime.fromisoformat(data["first_seen_at"]),
            started_at=datetime.fromisoformat(started) if started else None,
            team=data.get("team"),
            cost_usd=Decimal(cost) if cost is not None else None,
        )

    def table_row(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "row": self.row,
            "error": self.error,
            "first_seen_at": self.first_seen_at,
            "retried_at": None,
            "retries": 0,
            "started_at": self.started_at,
            "team": self.team,
            "cost_usd": self.cost_usd,
        }


def _insert(dialect: str) -> Insert:
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt: Insert = insert(ledger_rejected).on_conflict_do_nothing(index_elements=["record_id"])
    return stmt


async def insert_entries(engine: AsyncEngine, entries: Sequence[RejectedEntry]) -> None:
    """Into ``ledger_rejected`` (a ``record_id`` already there is left as it is)."""
    if not entries:
        return
    async with engine.begin() as conn:
        stmt = _insert(conn.dialect.name)
        for start in range(0, len(entries), _CHUNK):
            await conn.execute(stmt, [e.table_row() for e in entries[start : start + _CHUNK]])


class DeadLetters:
    """The file beside the spool, and moving it into the table. One per spool directory (its lock)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self._flushing = self.directory / _FLUSHING
        self._fd: int | None = None
        self._memory: list[bytes] = []  # lines the disk refused; retried on the next add/flush
        self._dirty = False
        self._lock = threading.Lock()
        self._pending = _count(self.path) + _count(self._flushing)

    @property
    def pending(self) -> int:
        """Dead-lettered records not yet in the ``ledger_rejected`` table."""
        return self._pending

    def add(self, record: UsageRecord, error: str) -> None:
        """Keep ``record`` with ``error`` (never raises; the disk refusing keeps it in memory)."""
        try:
            line = RejectedEntry.of(record, error).to_line()
        except Exception as exc:  # pragma: no cover - RejectedEntry.of is total; belt and braces
            line = (
                json.dumps(
                    {
                        "row": "{}",
                        "error": f"unencodable record: {exc!r}"[:500],
                        "first_seen_at": datetime.now(UTC).isoformat(),
                    }
                ).encode()
                + b"\n"
            )
        self._pending += 1
        self._memory.append(line)
        self._write_memory()

    def _write_memory(self) -> None:
        if not self._memory:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            data = memoryview(b"".join(self._memory))
            while data:
                data = data[os.write(self._fd, data) :]
            self._memory.clear()
            self._dirty = True
        except OSError:
            log.exception(
                "ledger: dead-letter file write failed; %d kept in memory", len(self._memory)
            )

    @property
    def needs_sync(self) -> bool:
        return self._dirty

    def sync(self) -> None:
        with self._lock:
            if not self._dirty or self._fd is None:
                return
            self._dirty = False
            fd = os.dup(self._fd)
        fsync_and_close(fd)

    async def flush(self, engine: AsyncEngine) -> bool:
        """Move the file's entries into the table; True when nothing is left outside it."""
        self._write_memory()
        if not self._flushing.exists():
            if self._fd is None and not self.path.exists():
                return not self._memory
            self._close_fd()
            if self.path.exists():
                os.replace(self.path, self._flushing)
        entries = list(_read(self._flushing))
        try:
            await insert_entries(engine, entries)
        except Exception as exc:
            log.warning(
                "ledger: dead-letter table unavailable (%r); kept in %s", exc, self._flushing
            )
            return False
        self._flushing.unlink(missing_ok=True)
        self._pending = max(0, self._pending - len(entries))
        if entries:
            log.error("ledger: %d refused records moved to ledger_rejected", len(entries))
        return not self._memory and not (self.path.exists() and self.path.stat().st_size)

    def close(self) -> None:
        self._write_memory()
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                except OSError:
                    log.exception("ledger: dead-letter fsync failed")
        self._close_fd()

    def _close_fd(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._dirty = False


def _count(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def _read(path: Path) -> Iterator[RejectedEntry]:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield RejectedEntry.from_line(line)
            except Exception:
                log.error(
                    "dead-letter file %s line %d unreadable (torn write?); skipped", path, number
                )


# ---------------------------------------------------------------- the command's side


@dataclass(frozen=True, slots=True)
class RejectedRow:
    id: int
    record_id: str | None
    error: str
    first_seen_at: datetime
    retried_at: datetime | None
    retries: int
    started_at: datetime | None
    team: str | None
    cost_usd: Decimal | None


async def list_rejected(engine: AsyncEngine, *, limit: int = 100) -> list[RejectedRow]:
    c = ledger_rejected.c
    stmt = (
        select(
            c.id,
            c.record_id,
            c.error,
            c.first_seen_at,
            c.retried_at,
            c.retries,
            c.started_at,
            c.team,
            c.cost_usd,
        )
        .order_by(c.id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [RejectedRow(*row) for row in rows]


async def rejected_totals(
    engine: AsyncEngine,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    team: str | None = None,
) -> tuple[int, Decimal]:
    """How many records are dead-lettered (started in the window) and their cost where known."""
    c = ledger_rejected.c
    stmt = select(func.count(), func.sum(c.cost_usd))
    if team is not None:
        stmt = stmt.where(c.team == team)
    if since is not None:
        stmt = stmt.where(c.started_at >= since)
    if until is not None:
        stmt = stmt.where(c.started_at < until)
    async with engine.connect() as conn:
        count, cost = (await conn.execute(stmt)).one()
    return int(count or 0), cost if cost is not None else Decimal(0)


@dataclass(frozen=True, slots=True)
class RetryResult:
    inserted: int
    still_rejected: int


async def retry_rejected(engine: AsyncEngine, ids: Sequence[int] | None = None) -> RetryResult:
    """Re-insert dead-lettered rows (all, or ``ids``) through the bounding and batch path.

    A row that now lands (or whose id is already in the ledger) leaves ``ledger_rejected``; one
    that is still refused stays, with ``retries`` + 1, ``retried_at`` and the new error.
    """
    c = ledger_rejected.c
    stmt = select(c.id, c.row).order_by(c.id)
    if ids is not None:
        stmt = stmt.where(c.id.in_(list(ids)))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    inserted = still = 0
    now = datetime.now(UTC)
    for row_id, row in rows:
        error: str | None = None
        try:
            bounded = bound_record(record_from_json(row))
            if isinstance(bounded, Refused):
                error = bounded.reason
            else:
                await write_batch(engine, [bounded])
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        async with engine.begin() as conn:
            if error is None:
                await conn.execute(ledger_rejected.delete().where(c.id == row_id))
                inserted += 1
            else:
                await conn.execute(
                    update(ledger_rejected)
                    .where(c.id == row_id)
                    .values(
                        retries=c.retries + 1,
                        retried_at=now,
                        error=bound_text(error, REJECTED_ERROR_WIDTH),
                    )
                )
                still += 1
    return RetryResult(inserted=inserted, still_rejected=still)
