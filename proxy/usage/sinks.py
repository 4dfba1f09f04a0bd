"""In-memory record sink (tests, development, and a default before the ledger is wired)."""

from __future__ import annotations

from collections import deque

from storage.record import UsageRecord


class MemorySink:
    """Keeps the last ``max_records`` records (bounded: never grows without limit)."""

    __slots__ = ("_records",)

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: deque[UsageRecord] = deque(maxlen=max_records)

    def submit(self, record: UsageRecord) -> None:
        self._records.append(record)

    @property
    def records(self) -> list[UsageRecord]:
        return list(self._records)

    def clear(self) -> None:
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
