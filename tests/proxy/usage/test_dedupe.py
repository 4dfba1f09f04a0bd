"""Dedupe of retrieved objects: the in-memory front decides this process's own sightings at once."""

from __future__ import annotations

import asyncio

from proxy.usage.dedupe import LayeredDedupe, MemoryDedupe


class SlowStore:
    """A persistent store whose answer arrives later (like the ledger's)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.asked: list[tuple[str, str]] = []

    async def first_time(self, kind: str, id: str) -> bool:
        self.asked.append((kind, id))
        await asyncio.sleep(0.01)
        if (kind, id) in self.seen:
            return False
        self.seen.add((kind, id))
        return True


async def test_a_retrieval_right_after_the_create_is_decided_without_the_database() -> None:
    store = SlowStore()
    dedupe = LayeredDedupe(store)
    create = dedupe.first_time("chat.completion", "chatcmpl-1")
    retrieval = dedupe.first_time("chat.completion", "chatcmpl-1")
    assert retrieval is False  # answered on the spot, before the create's database answer
    assert not isinstance(create, bool)
    assert await create is True
    assert store.asked == [("chat.completion", "chatcmpl-1")]


async def test_ids_first_seen_elsewhere_are_decided_by_the_persistent_store() -> None:
    store = SlowStore()
    store.seen.add(("response", "resp_1"))  # metered by another replica or an earlier run
    answer = LayeredDedupe(store).first_time("response", "resp_1")
    assert not isinstance(answer, bool)
    assert await answer is False


def test_memory_dedupe_forgets_the_oldest_beyond_its_bound() -> None:
    memory = MemoryDedupe(max_entries=2)
    assert memory.first_time("k", "a") and memory.first_time("k", "b")
    assert memory.first_time("k", "c")  # "a" is forgotten now
    assert not memory.first_time("k", "c")
    assert memory.first_time("k", "a")
