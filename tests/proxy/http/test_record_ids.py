"""Record ids: 32 hex chars, growing with time (the ledger's index appends), never repeated."""

from __future__ import annotations

import re
import time

from proxy.http.exchange import new_record_id


def test_ids_are_32_hex_chars_and_unique() -> None:
    ids = [new_record_id() for _ in range(100_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_grow_with_time_and_carry_the_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    first = new_record_id()
    time.sleep(0.003)
    second = new_record_id()
    after = time.time_ns() // 1_000_000
    assert first < second  # a later call sorts after: inserts land at the index's right edge
    assert before <= int(first[:12], 16) <= int(second[:12], 16) <= after


def test_a_forked_child_draws_its_own_ids() -> None:
    """Workers forked from one parent must not repeat each other's ids."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report a few ids and leave at once
        os.write(write, "".join(new_record_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    theirs = {text[i : i + 32][12:] for i in range(0, len(text), 32)}
    ours = {new_record_id()[12:] for _ in range(100)}
    assert len(theirs) == 100 and not theirs & ours
