"""Where openai-meter's CPU per call goes, by taking parts away: one interleaved run of the uvloop
floor, the product's forwarder without metering, and ``openai-meter serve`` in several configurations,
each reporting the whole process tree's CPU per call and the serving thread's alone (from
``/proc/PID/task/*/stat``, so a writer thread or process is counted where it runs).

    python -m bench.ablation_bench                 # JSON chat, 1 and 16 clients
    BENCH_SCENARIO=sse BENCH_CLIENTS=1 python -m bench.ablation_bench

Targets: ``floor`` (``bench.bare_proxy --uvloop``), ``forward`` (``bench.forward_only --uvloop``:
path rules, header rules, bounded reads, no meter), ``meter`` (defaults: SQLite ledger, journal, the
writer process), ``inprocess`` (``ledger.writer_process: false``), ``nojournal``
(``ledger.journal: false``), ``noflush`` (no ledger write during the run: batch and flush interval
raised past it). Differences between rows of one run are the parts' costs; compare ratios within a
run, never across runs (the machine is shared). Environment: ``BENCH_SCENARIO`` (json, sse,
embeddings), ``BENCH_CLIENTS`` (``1,16``), ``BENCH_SECONDS`` (3), ``BENCH_ROUNDS`` (3),
``BENCH_TARGETS`` (all of the above).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench.compare_bench import BODIES, Sample, Target, _load, _merge, _pct, _spawn, _wait_ready
from bench.proxy_bench import _free_port, meter_command

_NO_FLUSH = "flush_interval_ms: 600000, batch_size: 1000000, queue_size: 10000000"
LEDGER: dict[str, str] = {
    "meter": "",
    "inprocess": "writer_process: false",
    "nojournal": "journal: false",
    "noflush": _NO_FLUSH,
}
TARGETS = ("floor", "forward", *LEDGER)


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return found + [grandchild for child in found for grandchild in _children(child)]


def cpu_seconds(pid: int, *, main_thread_only: bool = False) -> float:
    """utime + stime of ``pid``'s threads (only its main thread, or also all its children's)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] if main_thread_only else [pid, *_children(pid)]
    for proc in pids:
        tasks = Path(f"/proc/{proc}/task")
        names = [str(proc)] if main_thread_only else [t.name for t in tasks.iterdir()]
        for name in names:
            try:
                fields = (tasks / name / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _start(name: str, upstream: str, tmp: Path) -> Target:
    py = sys.executable
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    if name == "floor":
        args = [py, "-m", "bench.bare_proxy", "--port", str(port), "--upstream", upstream]
        return Target(name, url, [_spawn([*args, "--uvloop"])])
    if name == "forward":
        args = [py, "-m", "bench.forward_only", "--port", str(port), "--upstream", upstream]
        return Target(name, url, [_spawn([*args, "--uvloop"])])
    home = tmp / name
    home.mkdir()
    ledger = ", ".join(
        filter(None, [f"spool_dir: {json.dumps(str(home / 'spool'))}", LEDGER[name]])
    )
    (home / "meter.yaml").write_text(f"logging: {{level: warning}}\nledger: {{{ledger}}}\n")
    return Target(
        name, url, [_spawn(meter_command(home / "meter.yaml", port, upstream, home / "l.db"))]
    )


async def run_async(
    scenario: str, clients: list[int], seconds: float, rounds: int, names: list[str]
) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="openai-meter-ablation-"))
    up_port = _free_port()
    upstream = _spawn([sys.executable, "-m", "bench.upstream", "--port", str(up_port), "--uvloop"])
    up_url = f"http://127.0.0.1:{up_port}"
    targets = {name: _start(name, up_url, tmp) for name in names}
    path, body = BODIES[scenario]
    results: dict[str, dict[str, float]] = {}
    try:
        for target in targets.values():
            await _wait_ready(target.url, path, body)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for conc in clients:
                per: dict[str, list[tuple[float, float, Sample]]] = {n: [] for n in targets}
                for target in targets.values():  # warm-up
                    await _load(session, target, scenario, conc, 1.0)
                for _ in range(rounds):
                    for name, target in targets.items():
                        pid = target.procs[0].pid
                        total0, main0 = cpu_seconds(pid), cpu_seconds(pid, main_thread_only=True)
                        sample = await _load(session, target, scenario, conc, seconds)
                        await asyncio.sleep(0.3)  # the ledger's last flush of the round
                        total = (cpu_seconds(pid) - total0) * 1000 / sample.calls
                        main = (
                            (cpu_seconds(pid, main_thread_only=True) - main0) * 1000 / sample.calls
                        )
                        per[name].append((total, main, sample))
                for name, samples in per.items():
                    merged = _merge([s for _, _, s in samples])
                    results[f"{scenario}_c{conc}_{name}"] = {
                        "cpu_ms_per_call": statistics.median(t for t, _, _ in samples),
                        "main_thread_ms_per_call": statistics.median(m for _, m, _ in samples),
                        "p50_ms": _pct(merged.latencies, 50),
                        "p99_ms": _pct(merged.latencies, 99),
                        "calls": merged.calls,
                    }
    finally:
        for target in targets.values():
            target.procs[0].terminate()
        upstream.terminate()
        for target in targets.values():
            target.procs[0].wait(timeout=40)
        upstream.wait(timeout=40)
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| cell | target | CPU/call ms | × floor | serving thread ms | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in results.items():
        scenario, conc, name = key.split("_", 2)
        floor = results.get(f"{scenario}_{conc}_floor", row)["cpu_ms_per_call"]
        lines.append(
            f"| {scenario} {conc} | {name} | {row['cpu_ms_per_call']:.3f} "
            f"| {row['cpu_ms_per_call'] / floor:.2f} | {row['main_thread_ms_per_call']:.3f} "
            f"| {row['p50_ms']:.3f} | {row['p99_ms']:.3f} |"
        )
    return "\n".join(lines)


def run() -> dict[str, float]:
    """For ``python -m bench``: flattened figures (and the table on stdout)."""
    results = asyncio.run(
        run_async(
            os.environ.get("BENCH_SCENARIO", "json"),
            [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,16").split(",")],
            float(os.environ.get("BENCH_SECONDS", "3")),
            int(os.environ.get("BENCH_ROUNDS", "3")),
            os.environ.get("BENCH_TARGETS", ",".join(TARGETS)).split(","),
        )
    )
    print(table(results))
    return {f"{k}_{m}": v for k, row in results.items() for m, v in row.items()}


if __name__ == "__main__":
    run()
