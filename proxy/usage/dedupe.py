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


class LayeredDedupe:
    """A :class:`MemoryDedupe` in front of a persistent store.

    This process's own sightings are decided on the spot, so a create (``POST`` with ``store``)
    and its immediate retrieval can never race to the database: the creating call is the one
    priced. The persistent store (the ledger's) decides for ids first seen by another replica or
    an earlier run.
    """

    __slots__ = ("_memory", "_persistent")

    def __init__(self, persistent: DedupeStore, memory: MemoryDedupe | None = None) -> None:
        self._persistent = persistent
        self._memory = memory if memory is not None else MemoryDedupe()

    def first_time(self, kind: str, id: str) -> bool | Awaitable[bool]:
        if not self._memory.first_time(kind, id):
            return False
        return self._persistent.first_time(kind, id)
