"""A writer process under load, for the kill -9 test: ``python -m tests.support.ledger_load URL SPOOL``.

Submits records ``rec-000000000`` upward at about ``RATE`` per second and prints, after every burst,
how many it has submitted (flushed), so the parent knows a lower bound at the moment it kills us.
"""

from __future__ import annotations

import asyncio
import sys

from storage.engine import create_engine
from storage.migrate import upgrade
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_records import make_record

RATE = 4000
BURST = 40


async def main(url: str, spool_dir: str) -> None:
    engine = create_engine(url)
    await upgrade(engine)
    # A small queue so some records overflow into the spool under load (the path to prove).
    writer = LedgerWriter(
        engine,
        Spool(spool_dir),
        batch_size=100,
        flush_interval_ms=50,
        queue_size=100,
        fsync_interval_ms=100,
    )
    await writer.start()
    n = 0
    print("ready", flush=True)
    while True:
        for _ in range(BURST):
            writer.submit(make_record(n))
            n += 1
        print(n, flush=True)
        await asyncio.sleep(BURST / RATE)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
