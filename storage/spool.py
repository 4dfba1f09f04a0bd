"""Append-only local spool: where records go when the database cannot take them (yet).

Layout: ``<spool_dir>/ledger-<seq>.jsonl`` segments, one JSON record per line, written in order.
Each append reaches the operating system at once (one ``write`` call, no user-space buffer), so a
killed process (``kill -9``) loses nothing that was appended; :meth:`Spool.sync` (``fsync``, called
by the writer every ``fsync_interval_ms``) makes it survive a power cut too.

Replay reads sealed segments oldest first, line by line (never a whole segment in memory), and
deletes a segment only after all its records are committed. A torn last line (the process died
mid-write) is skipped and logged; a segment with unreadable lines is kept as ``*.corrupt`` for a human.

One process owns a spool directory at a time (an ``flock`` on ``.lock``): two replicas pointed at the
same directory would replay each other's half-written segments.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from storage.fsync import fsync_and_close, fsync_dir
from storage.record import UsageRecord
from storage.rows import record_from_json, record_to_json

log = logging.getLogger(__name__)

_SEGMENT_RE: Final = re.compile(r"^ledger-(\d{16})\.jsonl$")
DEFAULT_SEGMENT_BYTES: Final = 16 * 1024 * 1024


class SpoolLockedError(RuntimeError):
    """Another process already uses this spool directory."""


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    seq: int

    def records(self) -> Iterator[UsageRecord]:
        """Records in write order; undecodable lines are logged and skipped (see ``bad_lines``)."""
        with self.path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield record_from_json(line)
                except Exception:
                    log.error("spool %s line %d unreadable; kept for inspection", self.path, number)
                    corrupt = self.path.with_suffix(".corrupt")
                    with corrupt.open("ab") as out:
                        out.write(line if line.endswith(b"\n") else line + b"\n")

    def count(self) -> int:
        """Non-empty lines (records, including unreadable ones)."""
        return _count_lines(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Spool:
    def __init__(
        self, directory: Path | str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLockedError(
                f"spool directory {self.directory} is in use by another process"
            ) from None
        existing = self._scan()
        self._next_seq = existing[-1].seq + 1 if existing else 1
        self._pending = sum(_count_lines(s.path) for s in existing)
        self._fd: int | None = None
        self._fd_path: Path | None = None
        self._fd_bytes = 0
        self._dirty = False
        self._fd_lock = threading.Lock()  # sync() runs in a worker thread; seal() closes the fd

    @property
    def pending(self) -> int:
        """Records in the spool not yet replayed (counted at open and on append/ack)."""
        return self._pending

    def append(self, records: Iterable[UsageRecord]) -> int:
        """Append records (one ``write``); returns how many. Raises ``OSError`` if the disk refuses."""
        data = b"".join(record_to_json(r) + b"\n" for r in records)
        if not data:
            return 0
        count = data.count(b"\n")
        fd = self._open_segment()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self._fd_bytes += len(data)
        self._pending += count
        self._dirty = True
        if self._fd_bytes >= self._segment_bytes:
            self.seal()
        return count

    @property
    def needs_sync(self) -> bool:
        """Something was appended since the last sync (cheap: lets the writer skip a thread hop)."""
        return self._dirty and self._fd is not None

    def sync(self) -> None:
        """``fsync`` the open segment if anything was appended since the last sync.

        Safe to call from a worker thread while the event loop appends or seals: it syncs a
        duplicate of the descriptor, so a concurrent ``seal`` cannot close it underneath.
        """
        with self._fd_lock:
            if not self._dirty or self._fd is None:
                return
            self._dirty = False
            fd = os.dup(self._fd)
        fsync_and_close(fd)

    def seal(self) -> None:
        """Close the open segment (fsync'd); the next append starts a new one."""
        if self._fd is not None:
            os.fsync(self._fd)
            with self._fd_lock:
                os.close(self._fd)
                self._fd = None
            self._fd_path = None
            self._fd_bytes = 0
            self._dirty = False
            fsync_dir(self.directory)

    def sealed_segments(self) -> list[Segment]:
        """Segments ready to replay, oldest first (the open one excluded)."""
        return [s for s in self._scan() if s.path != self._fd_path]

    def adopt(self, path: Path) -> int:
        """Take a file of record lines (a dead process's journal segment) as a sealed segment.

        A rename, no copy; returns how many records it holds. Call before appending.
        """
        count = _count_lines(path)
        if not count:
            path.unlink(missing_ok=True)
            return 0
        target = self.directory / f"ledger-{self._next_seq:016d}.jsonl"
        self._next_seq += 1
        os.replace(path, target)
        fsync_dir(self.directory)
        self._pending += count
        return count

    def acknowledge(self, count: int) -> None:
        """``count`` spooled records are now in the database (negative: take back an ack)."""
        self._pending = max(0, self._pending - count)

    def close(self) -> None:
        self.seal()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open_segment(self) -> int:
        if self._fd is None:
            path = self.directory / f"ledger-{self._next_seq:016d}.jsonl"
            self._next_seq += 1
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fd_path = path
            self._fd_bytes = 0
            fsync_dir(self.directory)
        return self._fd

    def _scan(self) -> list[Segment]:
        segments = []
        for path in self.directory.iterdir():
            match = _SEGMENT_RE.match(path.name)
            if match:
                segments.append(Segment(path, int(match.group(1))))
        return sorted(segments, key=lambda s: s.seq)


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                count += 1
    return count
