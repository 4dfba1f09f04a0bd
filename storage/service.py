"""The ledger as one unit for ``proxy/app.py``: engine, (auto-)migration, writer with spool, dedupe,
and the optional retention task. Settings are passed as plain values (storage does not import proxy).

    async with open_ledger(LedgerConfig(url=..., spool_dir=...), registry=registry) as ledger:
        ledger.writer.submit(record)        # RecordSink
        await ledger.dedupe.first_time(...) # DedupeStore
        await spent(ledger.engine, ...)     # storage.queries

Start order: engine -> upgrade (unless ``auto_upgrade`` is false) -> spool lock -> writer.start()
(replays a leftover spool) -> retention task. Stop order is the reverse; ``writer.stop()`` drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.dedupe import SqlDedupeStore
from storage.engine import create_engine
from storage.migrate import upgrade
from storage.retention import cutoff, prune
from storage.spool import Spool
from storage.writer import LedgerWriter
from storage.writer_process import SqliteWriterProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """Mirrors ``database.*`` and ``ledger.*`` in proxy.settings."""

    url: str = "sqlite:///openai-meter.db"
    auto_upgrade: bool = True
    spool_dir: str = "./spool"
    batch_size: int = 500
    flush_interval_ms: int = 200
    queue_size: int = 10_000
    fsync_interval_ms: int = 100
    retention_days: int | None = None
    retention_check_s: float = 3600.0
    stall_timeout_s: float = 30.0
    journal: bool = True
    writer_process: bool = True


@dataclass(frozen=True, slots=True)
class Ledger:
    engine: AsyncEngine
    writer: LedgerWriter
    dedupe: SqlDedupeStore
    stall_timeout_s: float = 30.0

    def progressing(self) -> bool:
        """For /readyz's ``ledger`` check: the writer is alive and records do not sit in memory
        longer than ``stall_timeout_s`` without progress. A database outage with a working spool
        keeps this true (records reach the spool); a spool the disk refuses, or a dead writer,
        makes it false."""
        return not self.writer.stalled(self.stall_timeout_s)

    async def ready(self) -> bool:
        """For /readyz: the database answers. (Records are safe in the spool either way.)"""
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2.0)
        except Exception:
            return False
        return True


@contextlib.asynccontextmanager
async def open_ledger(
    config: LedgerConfig, *, registry: CollectorRegistry | None = None
) -> AsyncIterator[Ledger]:
    engine = create_engine(config.url)
    process: SqliteWriterProcess | None = None
    try:
        if config.auto_upgrade:
            await upgrade(engine)
        spool = Spool(Path(config.spool_dir))
        process = _writer_process(engine) if config.writer_process else None
        if process is not None:
            await process.start()
        writer = LedgerWriter(
            engine,
            spool,
            batch_size=config.batch_size,
            flush_interval_ms=config.flush_interval_ms,
            queue_size=config.queue_size,
            fsync_interval_ms=config.fsync_interval_ms,
            registry=registry,
            journal=config.journal,
            batch_writer=process,
            lines=process.lines if process is not None else None,
        )
        await writer.start()
        retention = None
        if config.retention_days:
            retention = asyncio.create_task(
                _retention_loop(engine, config.retention_days, config.retention_check_s),
                name="ledger-retention",
            )
        try:
            yield Ledger(
                engine=engine,
                writer=writer,
                dedupe=SqlDedupeStore(engine),
                stall_timeout_s=config.stall_timeout_s,
            )
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            await writer.stop()
    finally:
        if process is not None:
            await process.close()
        await engine.dispose()


def _writer_process(engine: AsyncEngine) -> SqliteWriterProcess | None:
    """The SQLite file's writer process; None for PostgreSQL (one statement per batch already, the
    server does the work) and for an in-memory SQLite database (no file to share)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database or ""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return SqliteWriterProcess(database)


async def _retention_loop(engine: AsyncEngine, days: int, every_s: float) -> None:
    while True:
        try:
            deleted = await prune(engine, before=cutoff(datetime.now(UTC), days))
            if deleted:
                log.info("ledger retention: deleted %d raw rows older than %d days", deleted, days)
        except Exception:
            log.exception("ledger retention failed; will retry")
        await asyncio.sleep(every_s)
