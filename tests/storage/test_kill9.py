"""``kill -9`` of a writer process under load, then a restart: the journal and the spool replay, and
nothing submitted is lost (docs/reliability.md). ``tests/e2e/test_kill9_serve.py`` does the same to
a real ``openai-meter serve``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from storage.engine import create_engine
from storage.schema import usage_records
from storage.spool import Spool
from storage.writer import LedgerWriter
from tests.support.ledger_load import RATE

REPO = Path(__file__).resolve().parents[2]


def _load_then_kill(database_url: str, spool_dir: Path) -> int:
    """Run a writer process under load for ~2 s, SIGKILL it; returns records it had submitted."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ledger_load", database_url, str(spool_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    submitted = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        submitted = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return submitted


async def test_kill9_then_restart_replays_spool(database_url: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    submitted = await asyncio.to_thread(_load_then_kill, database_url, spool_dir)
    assert submitted > 2000

    spooled_at_kill = Spool(spool_dir)
    in_spool = {r.id for seg in spooled_at_kill.sealed_segments() for r in seg.records()}
    spooled_at_kill.close()

    engine = create_engine(database_url)
    try:
        writer = LedgerWriter(engine, Spool(spool_dir), retry_initial_s=0.05)
        await writer.start()
        await asyncio.wait_for(writer.flush(), 30)
        await writer.stop()
        async with engine.connect() as conn:
            ids = set((await conn.execute(select(usage_records.c.id))).scalars())
    finally:
        await engine.dispose()
    expected = {f"rec-{n:09d}" for n in range(submitted)}
    lost = expected - ids
    # Every submitted record was journaled (one write() in submit) or spooled: none is lost, not
    # even those still in the queue or the batch being written when the process died.
    print(f"kill -9 at ~{RATE}/s: submitted>={submitted} in_spool={len(in_spool)} lost={len(lost)}")
    assert not lost
    assert in_spool <= ids  # whatever reached the spool survived the kill and was replayed
    assert not list(spool_dir.glob("ledger-*.jsonl"))
    assert not [p for p in spool_dir.glob("journal-*.jsonl") if p.stat().st_size]
