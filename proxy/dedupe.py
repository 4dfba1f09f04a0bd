"""Meter each stored object once: the ``DedupeStore`` protocol and a bounded in-memory store.

Retrievals (``GET /v1/chat/completions/{id}``, ``GET /v1/responses/{id}``, a background response's
stream, ``GET /v1/batches/{id}``) return usage again on every call. The meter asks
``first_time(kind, id)`` once per observation that carries an id; only the first sighting is priced.

``first_time`` may return a ``bool`` (in-memory, answered on the spot) or an awaitable (a
persistent store backed by the ledger): the meter then finishes that one record in a task, and
``UsageMeter.drain()`` awaits such tasks at shutdown. A persistent store should keep a
``MemoryDedupe`` in front as its fast path and only consult the database on a miss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable
from typing import Protocol


class DedupeStore(Protocol):
    def first_time(self, kind: str, id: str) -> bool | Awaitable[bool]:
        """True exactly once per ``(kind, id)``; marks it seen."""
        ...


class MemoryDedupe:
    """LRU-bounded set of seen ids (oldest forgotten first; a forgotten id would be metered
    again, so size it well above the number of objects retrieved within their lifetime)."""

    __slots__ = ("_max", "_seen")

    def __init__(self, max_entries: int = 200_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first_time(self, kind: str, id: str) -> bool:
        key = (kind, id)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
