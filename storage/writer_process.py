"""The SQLite ledger's batch writer in a process of its own (``ledger.writer_process``, default on).

Why: written from the serving process, each flush cost that process ~0.04 ms of loop time per call
(SQLAlchemy, aiosqlite's hand-offs, building rows) plus the SQLite work in a thread competing with the
event loop for the GIL — the largest cost the bare pass-through does not pay, and the stall behind the
p99 (docs/performance.md, issue 16). Here the serving process only hands over the lines it already
encoded for the journal (:class:`EncodedLines`); :mod:`storage.writer_main` decodes, inserts and
commits with its own interpreter.

:class:`SqliteWriterProcess` is a :data:`storage.writer.BatchWriter`: everything else — the queue,
the journal, batches split on refusal, dead letters, the spool on outage, the drain — stays in
:class:`storage.writer.LedgerWriter`, unchanged. Its answers map onto the writer's exceptions:

* ``inserted`` → the count (durable: committed with ``synchronous=FULL`` before the reply);
* ``outage`` (the database could not be used) → :class:`WriterProcessOutage`, an ``OSError`` —
  spooled, retried with backoff;
* ``refused`` (the data) → :class:`BatchRefused` — the batch is split, a row refused alone is
  dead-lettered with the driver's message;
* the process died mid-batch (killed, out of memory) → started again and the batch retried once
  (inserts are idempotent on id); dying twice on the same batch counts as a refusal, so a batch that
  crashes it is split down to the row that does, which is dead-lettered.

A call cancelled mid-exchange (the writer's timeout) kills the process (its pipe is out of step);
the next batch starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from storage.record import UsageRecord
from storage.rows import record_to_json

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S: Final = 30.0


def _child_environment() -> dict[str, str]:
    """Our environment, with the import path spelled out: the child runs ``python -S`` (no
    ``site``: ~2.4 MiB less for a process that needs only orjson and our storage modules), so the
    directories ``site`` would have added — this package's root (editable installs included) and
    site-packages — come through ``PYTHONPATH``."""
    import storage

    roots = [str(Path(next(iter(storage.__path__))).resolve().parent)]
    roots += [entry for entry in sys.path if entry and Path(entry).is_dir()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots))
    return env


class WriterProcessOutage(OSError):
    """The writer process could not use the database (or could not be started): spool and retry."""


class BatchRefused(Exception):
    """The database refused the batch's data (``orig``: the driver's message, as SQLAlchemy's)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.orig = f"{kind}: {message}"


class _ProcessDied(Exception):
    pass


class EncodedLines:
    """Record → its journal line, so a batch is handed over without encoding it again.

    Holds a reference to each record (keyed by ``id()``, so identity is checked, never a stale
    id); :meth:`forget` when the record is settled. Bounded: past ``limit`` entries it stops
    remembering (the writer then encodes those records itself).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lines: dict[int, tuple[UsageRecord, bytes]] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def remember(self, record: UsageRecord, line: bytes) -> None:
        if len(self._lines) < self._limit:
            self._lines[id(record)] = (record, line)

    def line(self, record: UsageRecord) -> bytes:
        entry = self._lines.get(id(record))
        if entry is not None and entry[0] is record:
            return entry[1]
        return record_to_json(record)

    def forget(self, records: Sequence[UsageRecord]) -> None:
        lines = self._lines
        for record in records:
            entry = lines.get(id(record))
            if entry is not None and entry[0] is record:
                del lines[id(record)]


class SqliteWriterProcess:
    """Writes ledger batches to the SQLite file at ``path`` through ``python -m storage.writer_main``."""

    def __init__(
        self, path: str, *, lines_limit: int = 100_000, command: Sequence[str] | None = None
    ) -> None:
        self._path = path
        # The program that writes (tests substitute one that dies); PATH is appended.
        self._command = list(command or (sys.executable, "-S", "-m", "storage.writer_main"))
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.lines = EncodedLines(lines_limit)
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the process now (otherwise the first batch does)."""
        async with self._lock:
            await self._ensure()

    async def __call__(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        payload = b"\n".join(self.lines.line(record) for record in records)
        frame = len(payload).to_bytes(4, "big") + payload
        async with self._lock:
            try:
                reply = await self._exchange(frame)
            except _ProcessDied as first:
                self.restarts += 1
                log.warning(
                    "ledger writer process died (%s); restarting it, retrying the batch", first
                )
                try:
                    reply = await self._exchange(frame)
                except _ProcessDied as again:
                    self.restarts += 1
                    raise BatchRefused(
                        "WriterProcessDied", f"twice on this batch: {again}"
                    ) from None
        if "inserted" in reply:
            return int(reply["inserted"])
        kind, message = str(reply.get("type", "?")), str(reply.get("message", ""))
        if reply.get("error") == "outage":
            raise WriterProcessOutage(f"{kind}: {message}")
        raise BatchRefused(kind, message)

    async def close(self) -> None:
        """Close its stdin (it finishes the batch in hand and exits); kill it if it does not."""
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.returncode is not None:
                return
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), _CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.error("ledger writer process did not exit; killing it")
                proc.kill()
                await proc.wait()

    async def _ensure(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                return proc
            self.restarts += 1
            log.warning(
                "ledger writer process exited (status %s); starting a new one", proc.returncode
            )
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                self._path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=_child_environment(),
            )
        except OSError as exc:
            raise WriterProcessOutage(f"cannot start the ledger writer process: {exc}") from exc
        self._proc = proc
        log.debug("ledger writer process %d started for %s", proc.pid, self._path)
        return proc

    async def _exchange(self, frame: bytes) -> dict[str, Any]:
        proc = await self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame)
            await proc.stdin.drain()
            header = await proc.stdout.readexactly(4)
            reply = await proc.stdout.readexactly(int.from_bytes(header, "big"))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self._reap(proc)
            raise _ProcessDied(f"exit status {proc.returncode}") from exc
        except BaseException:  # cancelled mid-exchange: its pipe is out of step, start afresh
            self._kill(proc)
            raise
        decoded: dict[str, Any] = orjson.loads(reply)
        return decoded

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        self._kill(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5.0)

    def _kill(self, proc: asyncio.subprocess.Process) -> None:
        if self._proc is proc:
            self._proc = None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
