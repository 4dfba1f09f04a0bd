"""``openai-meter serve --workers 2`` as real processes (issue 16): both workers take calls, every
scrape of ``/metrics`` (whichever worker answers it) equals the ledger's row count, SIGTERM to the
parent drains both workers' in-flight streams into the ledger and exits 0, a killed worker is
restarted; and the event loop is uvloop unless ``server.uvloop: false``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from storage.engine import create_engine
from storage.schema import usage_records
from tests.support.fake_upstream import FakeUpstream
from tests.support.serve_process import BIN, ROOT, free_port, serve, wait_healthy

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
INFO = {"OPENAI_METER_LOGGING__LEVEL": "info"}


async def _ledger_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(usage_records))).scalar_one()
            )
    finally:
        await engine.dispose()


async def _wait_ledger(database_url: str, expected: int) -> None:
    for _ in range(300):
        if await _ledger_count(database_url) >= expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the ledger did not reach {expected} rows")


def _requests_total(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "openai_meter_requests"
        for sample in family.samples
        if sample.name == "openai_meter_requests_total"
    )


def _log_lines(stderr: bytes) -> list[dict[str, Any]]:
    lines = []
    for raw in stderr.decode(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


async def _two_workers(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> tuple[asyncio.subprocess.Process, str, str]:
    """``serve --workers 2`` on a SQLite ledger with info-level logs: (process, url, ledger URL)."""
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    port = free_port()
    process = await serve(
        tmp_path, "--config", _config(tmp_path), "--port", str(port), "--upstream",
        fake_upstream.url, "--database-url", database_url, "--workers", "2", env=INFO,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}", database_url


async def _worker_pids(process: asyncio.subprocess.Process) -> list[int]:
    """The two workers' pids, from the supervisor's info-level log line."""
    assert process.stderr is not None
    while True:
        line = json.loads(await asyncio.wait_for(process.stderr.readline(), 30))
        if match := re.search(r"2 workers serving \(pids \[(\d+), (\d+)\]\)", line["message"]):
            return [int(match[1]), int(match[2])]


async def _call(http: aiohttp.ClientSession, url: str, stream: bool = False) -> bytes:
    body = {**BODY, "stream": True} if stream else BODY
    async with http.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-test-w"}
    ) as response:
        assert response.status == 200
        return await response.read()


def _config(tmp_path: Path) -> str:
    config = tmp_path / "meter.yaml"
    config.write_text(
        f"ledger: {{spool_dir: {tmp_path}/spool}}\nserver: {{shutdown_grace_s: 20}}\n"
    )
    return str(config)


async def _stop(process: asyncio.subprocess.Process) -> bytes:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return stderr


async def test_two_workers_serve_scrapes_sum_and_sigterm_drains_both(
    fake_upstream: FakeUpstream, tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = await serve(
        tmp_path, "--config", _config(tmp_path), "--port", str(port), "--upstream",
        fake_upstream.url, "--database-url", database_url, "--workers", "2", env=INFO,
    )  # fmt: skip
    calls = 40
    try:
        await wait_healthy(url, process, "/readyz")
        # A new connection per call: SO_REUSEPORT spreads connections, not requests.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(calls):
                await _call(http, url)
            await _wait_ledger(database_url, calls)
            for _ in range(8):  # each scrape on a new connection: either worker answers
                async with http.get(url + "/metrics") as response:
                    assert response.status == 200
                    assert _requests_total(await response.text()) == calls
            async with http.get(
                url + "/metrics", headers={"Accept": "application/openmetrics-text"}
            ) as response:
                assert "openmetrics" in response.headers["Content-Type"]
                assert (await response.text()).rstrip().endswith("# EOF")

            # In-flight streams on both workers when SIGTERM reaches the parent: all finish.
            fake_upstream.chunk_delay_s = 0.1
            streams = [asyncio.create_task(_call(http, url, stream=True)) for _ in range(10)]
            for _ in range(1500):  # until all 10 reached the upstream (in flight)
                if len(fake_upstream.requests) >= calls + 10:
                    break
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            bodies = await asyncio.gather(*streams)
        assert all(body.rstrip().endswith(b"data: [DONE]") for body in bodies)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()[-3000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert await _ledger_count(database_url) == calls + 10
    lines = _log_lines(stderr)
    workers = {line.get("worker") for line in lines if line.get("logger") == "openai_meter.access"}
    assert workers == {0, 1}  # both took calls
    loops = {line["message"] for line in lines if line["message"].startswith("event loop:")}
    assert loops == {"event loop: uvloop.Loop"}
    assert not [p for p in (tmp_path / "spool").rglob("*.jsonl") if p.stat().st_size]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["worker-0", "worker-1"]


async def test_a_killed_worker_is_restarted_and_its_journal_replayed(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    process, url, database_url = await _two_workers(fake_upstream, tmp_path)
    try:
        await wait_healthy(url, process, "/readyz")
        pids = await _worker_pids(process)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(10):
                await _call(http, url)
            os.kill(pids[1], signal.SIGKILL)
            for _ in range(20):  # the survivor and then the restarted worker answer
                await _call(http, url)
        await _wait_ledger(database_url, 30)
        stderr = await _stop(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert await _ledger_count(database_url) == 30
    messages = [line["message"] for line in _log_lines(stderr)]
    assert any(
        re.search(rf"worker 1 \(pid {pids[1]}\) exited with -9; restarting", m) for m in messages
    )


def _summed_samples(exposition: str) -> dict[str, float]:
    """Per sample name, the sum over every series of the monotonic samples the scrape carries:
    the requests counter and the duration histogram's buckets, count and sum."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name not in ("openai_meter_requests", "openai_meter_request_duration_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count", "_sum")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            elif sample.name.endswith("_bucket"):
                name = f"{sample.name}{{le={sample.labels['le']}}}"
                totals[name] = totals.get(name, 0.0) + sample.value
    return totals


async def test_merged_counters_never_go_back_when_a_worker_is_killed(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """kill -9 of a worker loses its registry; the restarted worker must not make the merged sum
    drop (Prometheus would read the dip as a counter reset and rate() would count it again)."""
    process, url, database_url = await _two_workers(fake_upstream, tmp_path)
    highest: dict[str, float] = {}

    async def scrape(http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(url + "/metrics") as response:
            assert response.status == 200
            totals = _summed_samples(await response.text())
        for name, value in highest.items():  # never below what any earlier scrape showed
            # (a float sum added up in another order may differ in its last bits)
            assert totals.get(name, 0.0) >= value - 1e-9 * max(1.0, value), (name, totals, value)
        highest.update(totals)
        return totals

    drain: asyncio.Task[bytes] | None = None
    try:
        await wait_healthy(url, process, "/readyz")
        pids = await _worker_pids(process)
        # keep reading the (info-level) log so the pipe never fills and stalls the workers
        drain = asyncio.create_task(process.stderr.read())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            calls = 12
            for _ in range(calls):
                await _call(http, url)
            for victim in pids:  # each worker in turn: the one that answered scrapes dies too
                await _wait_ledger(database_url, calls)
                for _ in range(3):  # every call shown by a scrape (either worker answers) ...
                    assert (await scrape(http))["openai_meter_requests_total"] == calls
                os.kill(victim, signal.SIGKILL)  # ... before the kill
                for _ in range(6):  # scrapes and calls while it is dead and once it is back
                    await scrape(http)
                    await _call(http, url)
                    calls += 1
            await _wait_ledger(database_url, calls)
            for _ in range(4):
                totals = await scrape(http)
                # every call counted once: nothing the dead workers had shown was lost
                assert totals["openai_meter_requests_total"] == calls
                assert totals["openai_meter_request_duration_seconds_count"] == calls
                assert totals["openai_meter_request_duration_seconds_bucket{le=+Inf}"] == calls
        process.send_signal(signal.SIGTERM)
        stderr = await asyncio.wait_for(drain, 60)
        assert await asyncio.wait_for(process.wait(), 60) == 0, stderr.decode()[-3000:]
    finally:
        if process.returncode is None:  # SIGTERM: the parent stops its workers (kill would not)
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
        if drain is not None and not drain.done():
            drain.cancel()
    messages = [line["message"] for line in _log_lines(stderr)]
    for pid in pids:
        assert any(re.search(rf"\(pid {pid}\) exited with -9; restarting", m) for m in messages)


async def test_uvloop_off_runs_on_asyncio_loop(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    port = free_port()
    process = await serve(
        tmp_path, "--config", _config(tmp_path), "--port", str(port), "--upstream",
        fake_upstream.url, env={**INFO, "OPENAI_METER_SERVER__UVLOOP": "false"},
    )  # fmt: skip
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", process, "/readyz")
        stderr = await _stop(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    loops = [m["message"] for m in _log_lines(stderr) if m["message"].startswith("event loop:")]
    assert len(loops) == 1
    assert loops[0].startswith("event loop: asyncio.")
    assert "uvloop" not in loops[0]


def test_workers_with_a_blocking_budget_on_sqlite_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "meter.yaml"
    config.write_text(
        "teams:\n  research:\n    keys: ['sha256:0123456789ab']\n"
        "    budget: {daily_usd: '5', action: block}\n"
    )
    result = subprocess.run(
        [*BIN, "serve", "--config", str(config), "--port", str(free_port()), "--workers", "2"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "server.workers 2" in lines[0] and "'research'" in lines[0] and "PostgreSQL" in lines[0]
    assert not (tmp_path / "openai-meter.db").exists()
