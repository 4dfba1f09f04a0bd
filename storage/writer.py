"""The ledger writer: ``submit`` on the request path, batched inserts off it; nothing stops it.

* ``submit(record)`` bounds the record (:func:`storage.bounds.bound_record`: a record the schema
  cannot hold is dead-lettered at once), appends it to the bounded in-memory queue and to the
  per-record journal (:mod:`storage.journal`, one ``write``, no fsync) and returns; it never waits
  on the database and never raises. When the queue is full the record goes straight to the spool.
* One consumer task takes up to ``batch_size`` records (waiting at most ``flush_interval_ms`` for a
  batch to fill) and writes them with :func:`storage.ledger.write_batch` (raw rows + rollup, one
  transaction, idempotent on id).
* A batch the database *refuses* (a data error while the database answers) is split in halves until
  the refusing rows are found: good halves land in one round trip each, a row refused alone goes to
  the dead-letter store (:mod:`storage.rejected`) with the database's error. A batch that fails
  because the database is *unreachable* (connection errors, timeouts) goes to the spool and puts the
  writer in *degraded* mode: later batches are spooled too while the spool is replayed with backoff
  (``retry_initial_s`` doubling up to ``retry_max_s``). Spool replay goes through the same bounding
  and splitting, so a spool poisoned by an older version heals on the next start.
* The consumer is supervised: an unexpected exception is logged, counted in ``write_errors`` and the
  loop goes on with the next batch (the batch in hand is spooled first).
* ``start()`` hands journal segments a killed process left to the spool and replays the spool;
  ``stop()`` (SIGTERM path) writes what is queued and replays the spool; if the database does not
  answer within ``drain_timeout_s`` the rest is left fsync'd in the spool. ``stop()`` never raises.
* :meth:`stalled` is the ``/readyz`` ``ledger`` check: records have been waiting in memory longer than
  the limit with no progress (the spool refusing writes, a writer that cannot move), or the
  consumer is gone. A database outage alone is progress (batches reach the spool).

Metrics (on the injected registry): ``openai_meter_ledger_pending_records`` (not yet in the database:
queued, in flight, spooled, dead-letters not yet in their table), ``..._written_records_total``,
``..._spooled_records_total``, ``..._rejected_records_total``, ``..._write_errors_total``.
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
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.bounds import Refused, bound_record
from storage.journal import Journal, leftover_segments
from storage.ledger import write_batch
from storage.record import UsageRecord
from storage.rejected import DeadLetters
from storage.rows import record_to_json
from storage.spool import Spool
from storage.writer_process import EncodedLines

log = logging.getLogger(__name__)

BatchWriter = Callable[[Sequence[UsageRecord]], Awaitable[int]]
_PROBE_TIMEOUT_S = 2.0


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.pending = Gauge(
            "openai_meter_ledger_pending_records",
            "Ledger records accepted but not yet in the database "
            "(queued, in flight, spooled, or dead-lettered to the file beside the spool).",
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
        self.rejected = Counter(
            "openai_meter_ledger_rejected_records",
            "Ledger records moved to the dead-letter store (unstorable, or refused by the "
            "database on their own); see 'openai-meter db rejected list'.",
            registry=registry,
        )
        self.write_errors = Counter(
            "openai_meter_ledger_write_errors",
            "Failed ledger write attempts (batch, split half or replay) and writer errors.",
            registry=registry,
        )


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be reached (vs. it refused the data)."""
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError)


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
        journal: bool = True,
        batch_writer: BatchWriter | None = None,
        lines: EncodedLines | None = None,
    ) -> None:
        self._engine = engine
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
        self._lines = lines  # the batch writer reuses each record's journal line (writer process)
        self._queue: deque[UsageRecord] = deque()
        self._inflight: list[UsageRecord] = []
        self._dead = DeadLetters(spool.directory)
        for path in leftover_segments(spool.directory):  # a killed process's journal
            adopted = spool.adopt(path)
            if adopted:
                log.warning("ledger: %d journaled records from an earlier run to replay", adopted)
        self._journal = Journal(spool.directory) if journal else None
        self._has_records = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._stopping = False
        self._degraded = False
        self._retry_delay = retry_initial_s
        self._next_retry = 0.0
        self._waiting_since: float | None = None
        self._dead_retry = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.metrics = LedgerMetrics(registry)
        self.metrics.pending.set_function(self._pending)

    def _pending(self) -> int:
        return len(self._queue) + len(self._inflight) + self._spool.pending + self._dead.pending

    # -- request path -----------------------------------------------------------------------

    def submit(self, record: UsageRecord) -> None:
        try:
            bounded = bound_record(record)
            if isinstance(bounded, Refused):
                self._reject(bounded.record, bounded.reason)
                return
            overflow = self._stopping or len(self._queue) >= self._queue_size
            if overflow and self._spool_records((bounded,)):
                return
            self._enqueue(bounded)
        except Exception:  # never into the request path; keep the record instead
            log.exception("ledger submit failed; record kept in memory")
            self._enqueue(record)

    def _enqueue(self, record: UsageRecord) -> None:
        """Queue and journal together: journal slot i is queue record i (see Journal.committed)."""
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self._queue.append(record)
        if self._journal is not None or self._lines is not None:
            line = None
            with contextlib.suppress(Exception):  # the journal logs it; the writer encodes again
                line = record_to_json(record)
            if self._journal is not None:
                self._journal.append(record, line)
            if self._lines is not None and line is not None:
                self._lines.remember(record, line)
        self._idle.clear()
        self._has_records.set()
        if len(self._queue) >= self._batch_size:
            self._batch_full.set()

    def _reject(self, record: UsageRecord, reason: str) -> None:
        log.error("ledger: record %r dead-lettered: %s", getattr(record, "id", None), reason)
        self._dead.add(record, reason)
        self.metrics.rejected.inc()
        self._idle.clear()
        self._has_records.set()  # the consumer moves it into the table

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the consumer; a spool (and journal) left by an earlier run is replayed first."""
        if self._spool.pending:
            log.info("ledger: %d spooled records to replay", self._spool.pending)
            self._idle.clear()
        if self._dead.pending:
            self._idle.clear()
        self._tasks = [
            asyncio.create_task(self._consume(), name="ledger-writer"),
            asyncio.create_task(self._sync_files(), name="ledger-spool-fsync"),
        ]

    async def stop(self) -> None:
        """Drain: write the queue, replay the spool; what the database refuses stays spooled.

        Never raises: whatever happens, every record ends in the database, the spool, the
        dead-letter file, or (only if the disk refuses too) the journal.
        """
        self._stopping = True
        self._has_records.set()
        self._batch_full.set()
        try:
            await self._stop_consumer()
        except BaseException:
            log.exception("ledger: error while draining; spooling what is left")
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._rescue_inflight()
        if self._queue:
            self._spool_queue()
        left = len(self._queue)
        if left:
            log.critical("ledger: %d records could not be spooled; they stay in the journal", left)
        if self._dead.pending and not self._degraded:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dead.flush(self._engine), _PROBE_TIMEOUT_S * 2)
        for closing in (
            self._dead.close,
            self._spool.close,
            lambda: self._journal.close(everything_durable=not left) if self._journal else None,
        ):
            try:
                closing()
            except Exception:
                log.exception("ledger: error while closing")
        self._tasks = []

    async def _stop_consumer(self) -> None:
        consumer = self._tasks[0] if self._tasks else None
        if consumer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(consumer), self._drain_timeout)
        except TimeoutError:
            log.error("ledger: drain timed out; unwritten records stay in the spool")
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    async def flush(self) -> None:
        """Wait until everything submitted so far is in the database (spool replayed)."""
        await self._idle.wait()

    @property
    def degraded(self) -> bool:
        return self._degraded

    def stalled(self, limit_s: float) -> bool:
        """True when records have waited in memory over ``limit_s`` without progress, or the
        consumer is gone (the ``/readyz`` ``ledger`` check)."""
        if self._tasks and self._tasks[0].done() and not self._stopping:
            return True
        since = self._waiting_since
        return since is not None and time.monotonic() - since > limit_s

    # -- consumer -----------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            try:
                if await self._step():
                    return
            except asyncio.CancelledError:
                self._rescue_inflight()
                raise
            except Exception:
                self.metrics.write_errors.inc()
                log.exception("ledger writer: unexpected error; continuing with the next batch")
                self._rescue_inflight()
                if self._stopping:
                    return
                await asyncio.sleep(self._retry_delay)

    async def _step(self) -> bool:
        """One round: a batch, then dead-letters and spool replay when due. True: stopped."""
        batch = await self._next_batch()
        if batch:
            if self._degraded:
                self._spool_inflight()
            elif await self._store(batch):
                self._settle()
            else:
                self._spool_inflight()
                self._enter_degraded()
            if self._inflight:  # the spool refused too: back to the queue, try again later
                self._rescue_inflight()
                if self._stopping:
                    return True
                await asyncio.sleep(self._retry_delay)
        dead_due = self._dead.pending and time.monotonic() >= self._dead_retry
        if dead_due and not self._degraded and not await self._dead.flush(self._engine):
            self._dead_retry = time.monotonic() + self._retry_max
        if self._spool.pending and self._replay_due():
            replayed = await self._replay()
            if not replayed and self._stopping:
                self._spool_queue()  # the database is down: keep it all spooled
                return True
        if not self._queue:
            if not self._spool.pending and not self._dead.pending:
                self._idle.set()
            if self._stopping:
                return True
        return False

    def _replay_due(self) -> bool:
        return not self._degraded or self._stopping or time.monotonic() >= self._next_retry

    async def _next_batch(self) -> list[UsageRecord]:
        if not self._queue and not self._stopping:
            self._has_records.clear()
            timeout = None
            due = []  # wake up for the next replay / dead-letter attempt
            if self._spool.pending:
                due.append(self._next_retry if self._degraded else 0.0)
            if self._dead.pending and not self._degraded:
                due.append(self._dead_retry)
            if due:
                timeout = max(0.0, min(due) - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._has_records.wait(), timeout)
        if self._queue and len(self._queue) < self._batch_size and not self._stopping:
            self._batch_full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self._flush_interval)
        count = min(self._batch_size, len(self._queue))
        self._inflight = [self._queue.popleft() for _ in range(count)]
        return self._inflight

    def _settle(self) -> None:
        """The in-flight batch is durable (database, spool or dead-letter store)."""
        count = len(self._inflight)
        if self._lines is not None:
            self._lines.forget(self._inflight)
        self._inflight = []
        if self._journal is not None:
            self._journal.committed(count)
        self._waiting_since = time.monotonic() if self._queue else None

    def _rescue_inflight(self) -> None:
        """Put an unsettled in-flight batch back at the front of the queue (order kept)."""
        if self._inflight:
            self._queue.extendleft(reversed(self._inflight))
            self._inflight = []

    def _spool_inflight(self) -> None:
        if self._spool_records(self._inflight):
            self._settle()

    def _spool_queue(self) -> None:
        self._rescue_inflight()
        while self._queue:
            count = min(self._batch_size * 10, len(self._queue))
            self._inflight = [self._queue.popleft() for _ in range(count)]
            if not self._spool_records(self._inflight):
                self._rescue_inflight()
                return
            self._settle()

    async def _store(self, batch: Sequence[UsageRecord]) -> bool:
        """Write ``batch``; isolate and dead-letter rows the database refuses. False: outage."""
        try:
            inserted = await asyncio.wait_for(self._write(batch), self._write_timeout)
        except Exception as exc:  # includes TimeoutError; the batch may or may not have committed
            self.metrics.write_errors.inc()
            if is_outage(exc) or not await self._database_answers():
                log.warning("ledger write of %d records failed: %r", len(batch), exc)
                return False
            if len(batch) == 1:
                reason = getattr(exc, "orig", None) or exc  # the driver's message, not our SQL
                self._reject(batch[0], f"refused by the database: {type(exc).__name__}: {reason}")
                return True
            log.warning("ledger: database refused a batch of %d (%r); splitting", len(batch), exc)
            middle = len(batch) // 2
            return await self._store(batch[:middle]) and await self._store(batch[middle:])
        self.metrics.written.inc(inserted)
        return True

    async def _database_answers(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), _PROBE_TIMEOUT_S)
        except Exception:
            return False
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
            lines = segment.count()
            records = segment.records()
            done = 0
            while chunk := list(islice(records, self._batch_size)):
                storable: list[UsageRecord] = []
                for record in chunk:
                    bounded = bound_record(record)  # heals records spooled by older versions
                    if isinstance(bounded, Refused):
                        self._reject(bounded.record, bounded.reason)
                    else:
                        storable.append(bounded)
                if storable and not await self._store(storable):
                    self._spool.acknowledge(-done)  # the whole segment is replayed again later
                    self._enter_degraded()
                    return False
                done += len(chunk)
                self._spool.acknowledge(len(chunk))
            self._spool.acknowledge(lines - done)  # unreadable lines: kept in *.corrupt instead
            segment.remove()
        if self._degraded:
            log.info("ledger: spool replayed; database writes resumed")
        self._degraded = False
        self._retry_delay = self._retry_initial
        return True

    def _spool_records(self, records: Sequence[UsageRecord]) -> bool:
        """Append to the spool; False (records untouched) when the disk refuses."""
        if not records:
            return True
        try:
            self.metrics.spooled.inc(self._spool.append(records))
        except Exception:
            log.exception("ledger: spool write failed; %d records kept in memory", len(records))
            return False
        return True

    async def _sync_files(self) -> None:
        while True:
            await asyncio.sleep(self._fsync_interval)
            # Skip the thread hop when nothing was written (it cost ~4% of the server's CPU).
            journal = (
                self._journal if self._journal is not None and self._journal.needs_sync else None
            )
            if not self._spool.needs_sync and journal is None and not self._dead.needs_sync:
                continue
            try:
                await asyncio.to_thread(self._sync_all, journal)
            except Exception:
                log.exception("ledger: fsync failed")

    def _sync_all(self, journal: Journal | None) -> None:
        self._spool.sync()
        if journal is not None:
            journal.sync()
        self._dead.sync()
