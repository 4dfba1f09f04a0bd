"""The per-record journal: what closes the ``kill -9`` window between ``submit`` and a batch commit.

Every record the writer queues is appended to ``<spool_dir>/journal-<seq>.jsonl`` at once -- one
``write`` to an open descriptor, no fsync on the request path. The kernel owns the bytes as soon as
``write`` returns, so a killed process loses nothing; a machine crash loses at most what was written
since the last :meth:`Journal.sync` (the writer calls it every ``fsync_interval_ms``).

The writer takes records from its queue in order, so "the first N journaled records are durable"
(in the database, the spool or the dead-letter store) is one counter, :meth:`Journal.committed`.
A segment whose records are all durable is deleted; when everything is, the open segment is truncated
to zero (one ``ftruncate``), so the journal stays small. Segments rotate at ``segment_bytes``.

On start, segments a dead process left behind are handed to the spool (:meth:`Spool.adopt`: a
rename, no copy) and replayed through the normal path -- idempotent on id, so records the database
had already committed are skipped. The spool directory's lock covers the journal too.

Line format: the spool's (:func:`storage.rows.record_to_json`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from pathlib import Path
from typing import Final

from storage.fsync import fsync_and_close, fsync_dir
from storage.record import UsageRecord
from storage.rows import record_to_json

log = logging.getLogger(__name__)

_SEGMENT_RE: Final = re.compile(r"^journal-(\d{16})\.jsonl$")
DEFAULT_SEGMENT_BYTES: Final = 4 * 1024 * 1024


def leftover_segments(directory: Path) -> list[Path]:
    """Journal segments in ``directory``, oldest first (call before opening a :class:`Journal`)."""
    found = []
    for path in directory.iterdir():
        match = _SEGMENT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


class Journal:
    def __init__(
        self, directory: Path | str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.directory = Path(directory)
        self._segment_bytes = segment_bytes
        existing = leftover_segments(self.directory)  # normally none: adopted by the spool first
        self._next_seq = int(_SEGMENT_RE.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        self._unsynced: list[int] = []  # descriptors of rotated segments, fsync'd by sync()
        self._new_file = False
        self._fd: int | None = None
        self._path: Path | None = None
        self._bytes = 0
        self._appended = 0  # records appended since open (including failed writes: one slot each)
        self._committed = 0
        self._sealed: deque[tuple[Path, int]] = deque()  # (path, appended count at its end)
        self._dirty = False
        self._lock = threading.Lock()
        self.failed = False  # a write failed: the journal no longer covers every record

    def append(self, record: UsageRecord, line: bytes | None = None) -> None:
        """Journal one queued record (never raises: a disk error is logged, the record stays queued).

        ``line``: the record already encoded (:func:`storage.rows.record_to_json`), if the caller has it.
        """
        self._appended += 1
        try:
            data = (record_to_json(record) if line is None else line) + b"\n"
            fd = self._fd if self._fd is not None else self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._bytes += len(data)
            self._dirty = True
            if self._bytes >= self._segment_bytes:
                self._rotate()
        except Exception:
            if not self.failed:
                log.exception("ledger journal write failed; records stay in memory only")
            self.failed = True

    def committed(self, count: int) -> None:
        """The next ``count`` journaled records (in append order) are durable elsewhere."""
        if count <= 0:
            return
        self._committed = min(self._appended, self._committed + count)
        try:
            while self._sealed and self._sealed[0][1] <= self._committed:
                path, _ = self._sealed.popleft()
                path.unlink(missing_ok=True)
            if self._committed == self._appended and self._fd is not None and self._bytes:
                os.ftruncate(self._fd, 0)  # O_APPEND: the next write starts at 0 again
                self._bytes = 0
        except OSError:
            log.exception("ledger journal truncate failed (replay on start stays idempotent)")

    @property
    def outstanding(self) -> int:
        return self._appended - self._committed

    def sync(self) -> None:
        """fsync what was appended (from a worker thread; a concurrent rotate cannot close it)."""
        with self._lock:
            rotated, self._unsynced = self._unsynced, []
            new_file, self._new_file = self._new_file, False
            fd = os.dup(self._fd) if self._dirty and self._fd is not None else None
            self._dirty = False
        for old in rotated:
            fsync_and_close(old)
        if fd is not None:
            fsync_and_close(fd)
        if new_file:
            fsync_dir(self.directory)

    @property
    def needs_sync(self) -> bool:
        return self._dirty or bool(self._unsynced) or self._new_file

    def close(self, *, everything_durable: bool) -> None:
        """Close; delete the segments when everything is durable, else fsync and keep them."""
        with self._lock:
            fd, self._fd = self._fd, None
            rotated, self._unsynced = self._unsynced, []
        for old in [*rotated, *([fd] if fd is not None else [])]:
            try:
                if not everything_durable:
                    os.fsync(old)
            except OSError:
                log.exception("ledger journal fsync failed")
            finally:
                os.close(old)
        if everything_durable and not self.failed:
            for path, _ in self._sealed:
                path.unlink(missing_ok=True)
            if self._path is not None:
                self._path.unlink(missing_ok=True)
            self._sealed.clear()

    def _open(self) -> int:
        path = self.directory / f"journal-{self._next_seq:016d}.jsonl"
        self._next_seq += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        with self._lock:
            self._fd = fd
            self._new_file = True
        self._path = path
        self._bytes = 0
        return fd

    def _rotate(self) -> None:
        if self._path is None:
            return
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                self._unsynced.append(fd)  # fsync'd (and closed) by the next sync(), off the loop
        self._sealed.append((self._path, self._appended))
        self._path = None
        self._dirty = False
