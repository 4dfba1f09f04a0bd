"""The ledger writer: ``submit`` on the request path, batched inserts off it, spool on trouble.

* ``submit(record)`` appends to a bounded in-memory queue and returns; it never waits on the
  database and never raises. When the queue is full the record goes straight to the spool.
* One consumer task takes up to ``batch_size`` records (waiting at most ``flush_interval_ms`` for a
  batch to fill) and writes them with :func:`storage.ledger.insert_records` (raw rows + rollup, one
  transaction, idempotent on id).
* A failed or timed-out write sends the batch to the spool and puts the writer in *degraded* mode:
  later batches are spooled too (keeping their order) while the spool is replayed with backoff
  (``retry_initial_s`` doubling up to ``retry_max_s``). A replay that succeeds ends degraded mode.
* ``start()`` replays a spool left by an earlier process; ``stop()`` (SIGTERM path) writes what is
  queued and replays the spool, and if the database still does not answer within ``drain_timeout_s``
  leaves the rest fsync'd in the spool for the next start. Nothing is dropped.

Metrics (on the injected registry): ``openai_meter_ledger_pending_records`` (queued + spooled),
``openai_meter_ledger_written_records_total`` (rows newly inserted), ``..._spooled_records_total``,
``..._write_errors_total`` (failed write attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger import write_batch
from storage.record import UsageRecord
from storage.spool import Spool

log = logging.getLogger(__name__)

BatchWriter = Callable[[Sequence[UsageRecord]], Awaitable[int]]


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.pending = Gauge(
            "openai_meter_ledger_pending_records",
            "Ledger records accepted but not yet in the database (queued + spooled).",
            registry=registry,
        )
        self.written = Counter(
            "openai_meter_ledger_written_records",
            "Ledger records newly inserted into the database.",
            registry=registry,
        )
        self.spooled = Counter(
            "openai_meter_ledger_spooled_records",
            "Ledger records written to the local spool (database error or full queue).",
            registry=registry,
        )
        self.write_errors = Counter(
            "openai_meter_ledger_write_errors",
            "Failed ledger write attempts (batch or replay).",
            registry=registry,
        )


class LedgerWriter:
    """Implements :class:`storage.record.RecordSink`."""

    def __init__(
        self,
        engine: AsyncEngine,
        spool: Spool,
        *,
        batch_size: int = 500,
        flush_interval_ms: int = 200,
        queue_size: int = 10_000,
        fsync_interval_ms: int = 100,
        registry: CollectorRegistry | None = None,
        write_timeout_s: float = 10.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        drain_timeout_s: float = 20.0,
        batch_writer: BatchWriter | None = None,
    ) -> None:
        self._spool = spool
        self._batch_size = batch_size
        self._flush_interval = flush_interval_ms / 1000
        self._queue_size = queue_size
        self._fsync_interval = fsync_interval_ms / 1000
        self._write_timeout = write_timeout_s
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._drain_timeout = drain_timeout_s
        self._write: BatchWriter = batch_writer or (lambda batch: write_batch(engine, batch))
        self._queue: deque[UsageRecord] = deque()
        self._has_records = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._stopping = False
        self._degraded = False
        self._retry_delay = retry_initial_s
        self._next_retry = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.metrics = LedgerMetrics(registry)
        self.metrics.pending.set_function(lambda: len(self._queue) + self._spool.pending)

    # -- request path -----------------------------------------------------------------------

    def submit(self, record: UsageRecord) -> None:
        try:
            if self._stopping or len(self._queue) >= self._queue_size:
                self._to_spool((record,))
                return
            self._queue.append(record)
            self._idle.clear()
            self._has_records.set()
            if len(self._queue) >= self._batch_size:
                self._batch_full.set()
        except Exception:  # never into the request path; keep the record in memory instead
            log.exception("ledger submit failed; record kept in memory")
            self._queue.append(record)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the consumer; a spool left by an earlier run is replayed first (in order)."""
        if self._spool.pending:
            log.info("ledger: %d spooled records to replay", self._spool.pending)
            self._degraded = True
        self._tasks = [
            asyncio.create_task(self._consume(), name="ledger-writer"),
            asyncio.create_task(self._sync_spool(), name="ledger-spool-fsync"),
        ]

    async def stop(self) -> None:
        """Drain: write the queue, replay the spool; what the database refuses stays spooled."""
        self._stopping = True
        self._has_records.set()
        self._batch_full.set()
        consumer = self._tasks[0] if self._tasks else None
        if consumer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(consumer), self._drain_timeout)
            except TimeoutError:
                log.error("ledger: drain timed out; unwritten records stay in the spool")
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue:
            self._to_spool(self._drain_queue())
        if self._queue:
            log.critical("ledger: %d records could not be written anywhere", len(self._queue))
        self._spool.close()
        self._tasks = []

    async def flush(self) -> None:
        """Wait until everything submitted so far is in the database (spool replayed)."""
        await self._idle.wait()

    @property
    def degraded(self) -> bool:
        return self._degraded

    # -- consumer -----------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                if self._degraded:
                    self._to_spool(batch)
                elif not await self._try_write(batch):
                    self._to_spool(batch)
                    self._enter_degraded()
            if self._spool.pending and self._replay_due():
                replayed = await self._replay()
                if not replayed and self._stopping:
                    self._to_spool(self._drain_queue())  # the database is down: keep it all spooled
                    return
            if not self._queue:
                if not self._spool.pending:
                    self._idle.set()
                if self._stopping:
                    return

    def _replay_due(self) -> bool:
        return not self._degraded or self._stopping or time.monotonic() >= self._next_retry

    async def _next_batch(self) -> list[UsageRecord]:
        if not self._queue and not self._stopping:
            self._has_records.clear()
            timeout = None
            if self._spool.pending:  # wake up for the next replay attempt
                timeout = max(0.0, self._next_retry - time.monotonic()) if self._degraded else 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._has_records.wait(), timeout)
        if self._queue and len(self._queue) < self._batch_size and not self._stopping:
            self._batch_full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self._flush_interval)
        count = min(self._batch_size, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    def _drain_queue(self) -> list[UsageRecord]:
        records = list(self._queue)
        self._queue.clear()
        return records

    async def _try_write(self, batch: Sequence[UsageRecord]) -> bool:
        try:
            inserted = await asyncio.wait_for(self._write(batch), self._write_timeout)
        except Exception as exc:  # includes TimeoutError; the batch may or may not have committed
            self.metrics.write_errors.inc()
            log.warning("ledger write of %d records failed: %r", len(batch), exc)
            return False
        self.metrics.written.inc(inserted)
        return True

    def _enter_degraded(self) -> None:
        if not self._degraded:
            log.error("ledger: database unavailable; spooling to %s", self._spool.directory)
        self._degraded = True
        self._next_retry = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._retry_max)

    async def _replay(self) -> bool:
        """Replay sealed spool segments oldest first; True when the spool is empty again."""
        self._spool.seal()
        for segment in self._spool.sealed_segments():
            records = segment.records()
            done = 0
            while chunk := list(islice(records, self._batch_size)):
                if not await self._try_write(chunk):
                    self._spool.acknowledge(-done)  # the whole segment is replayed again later
                    self._enter_degraded()
                    return False
                done += len(chunk)
                self._spool.acknowledge(len(chunk))
            segment.remove()
        if self._degraded:
            log.info("ledger: spool replayed; database writes resumed")
        self._degraded = False
        self._retry_delay = self._retry_initial
        return True

    def _to_spool(self, records: Sequence[UsageRecord]) -> None:
        try:
            self.metrics.spooled.inc(self._spool.append(records))
        except OSError:
            # The disk refused too: keep them in memory (never drop) and retry through the queue.
            log.exception("ledger: spool write failed; %d records kept in memory", len(records))
            self._queue.extendleft(reversed(records))

    async def _sync_spool(self) -> None:
        while True:
            await asyncio.sleep(self._fsync_interval)
            if not self._spool.needs_sync:
                continue  # nothing spooled: no thread hop (it cost ~4% of the server's CPU)
            try:
                await asyncio.to_thread(self._spool.sync)
            except OSError:
                log.exception("ledger: spool fsync failed")
