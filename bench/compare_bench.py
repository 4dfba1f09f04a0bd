"""One interleaved run: direct, the bare floor (aiohttp pass-through on uvloop), openai-meter, and the
LiteLLM proxy, on chat JSON, chat SSE and embeddings at 1, 16 and 64 clients.

``python -m bench.compare_bench`` (or ``make bench-compare``). Every target runs in its own process
against the same fake upstream (``bench.upstream``, on uvloop); the load generator is this process.
Targets take turns in each round, for a fixed time each, so a noisy neighbour hits all of them alike:
compare ratios within one run, never absolute figures across runs.

Per scenario × concurrency × target: CPU per call (the server's utime+stime from /proc), added p50
and p99 over going direct, throughput, time to first byte (for SSE, the first event), and RSS idle
and after load. Ratios are to the floor.

LiteLLM is installed into its own venv by this script (``BENCH_LITELLM_VENV``, default
``.bench/litellm``; ``pip install -r bench/litellm-requirements.txt``, which says why it is not
simply ``litellm[proxy]``) and run offline:
``LITELLM_LOCAL_MODEL_COST_MAP=True``, a master key, no database. ``BENCH_LITELLM=0`` leaves it out.

Environment: ``BENCH_SECONDS`` per target per round (default 2), ``BENCH_ROUNDS`` (3),
``BENCH_CLIENTS`` (``1,16,64``), ``BENCH_SCENARIOS`` (``json,sse,embeddings``),
``BENCH_METER_ARGS`` (extra ``serve`` flags, e.g. ``--workers 2``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.proxy_bench import _cpu_seconds, _free_port, meter_command

REPO = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-bench-master-key"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
BODIES = {
    "json": ("/v1/chat/completions", json.dumps(CHAT).encode()),
    "sse": ("/v1/chat/completions", json.dumps({**CHAT, "stream": True}).encode()),
    "embeddings": (
        "/v1/embeddings",
        json.dumps({"model": "text-embedding-3-small", "input": "hello world"}).encode(),
    ),
}


@dataclass
class Target:
    name: str
    url: str
    procs: list[subprocess.Popen[bytes]]
    rss_idle_mib: float = 0.0

    def cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            total += _cpu_seconds(proc.pid)
            total += sum(_cpu_seconds(c) for c in _children(proc.pid))
        return total

    def rss_mib(self) -> float:
        pids = [p.pid for p in self.procs]
        pids += [c for p in self.procs for c in _children(p.pid)]
        return sum(_rss_kib(pid) for pid in pids) / 1024


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    errors: int = 0


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(c) for c in found]
    for child in list(out):
        out += _children(child)
    return out


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def ensure_litellm() -> Path | None:
    """The LiteLLM proxy's executable in its own venv, installed on first use; None when off."""
    if os.environ.get("BENCH_LITELLM", "1") == "0":
        return None
    venv = Path(os.environ.get("BENCH_LITELLM_VENV", REPO / ".bench" / "litellm"))
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"installing the LiteLLM proxy into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        requirements = Path(__file__).with_name("litellm-requirements.txt")
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)], check=True
        )
    return exe


def _litellm_config(path: Path, upstream: str) -> None:
    models = []
    for name in ("gpt-4o-mini", "text-embedding-3-small"):
        models.append(
            f"  - model_name: {name}\n    litellm_params:\n      model: openai/{name}\n"
            f"      api_base: {upstream}/v1\n      api_key: sk-upstream\n"
        )
    path.write_text(
        "model_list:\n"
        + "".join(models)
        + f"general_settings:\n  master_key: {MASTER_KEY}\n"
        + "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
    )


async def _wait_ready(url: str, path: str, body: bytes, wait_s: float = 180.0) -> None:
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.post(url + path, data=body, headers=_headers()) as r:
                    await r.read()
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}


async def _load(
    session: aiohttp.ClientSession, target: Target, scenario: str, clients: int, seconds: float
) -> Sample:
    path, body = BODIES[scenario]
    sample = Sample()
    stop_at = time.perf_counter() + seconds
    headers = _headers()

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                async with session.post(target.url + path, data=body, headers=headers) as r:
                    first = await r.content.readany()
                    t1 = time.perf_counter()
                    await r.read()
                    ok = r.status == 200 and bool(first)
            except aiohttp.ClientError:
                ok = False
            t2 = time.perf_counter()
            if not ok:
                sample.errors += 1
                continue
            sample.latencies.append(t2 - t0)
            sample.ttfb.append(t1 - t0)

    c0, w0 = target.cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    sample.seconds = time.perf_counter() - w0
    sample.cpu_s = target.cpu() - c0
    sample.calls = len(sample.latencies)
    return sample


def _merge(samples: list[Sample]) -> Sample:
    out = Sample()
    for s in samples:
        out.latencies += s.latencies
        out.ttfb += s.ttfb
        out.calls += s.calls
        out.seconds += s.seconds
        out.cpu_s += s.cpu_s
        out.errors += s.errors
    return out


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def run_async(
    seconds: float, rounds: int, clients: list[int], scenarios: list[str]
) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="openai-meter-compare-"))
    py = sys.executable
    up_port, floor_port, meter_port = _free_port(), _free_port(), _free_port()
    up_url = f"http://127.0.0.1:{up_port}"
    targets: dict[str, Target] = {}
    upstream = _spawn([py, "-m", "bench.upstream", "--port", str(up_port), "--uvloop"])
    targets["direct"] = Target("direct", up_url, [upstream])
    floor = _spawn(
        [py, "-m", "bench.bare_proxy", "--port", str(floor_port), "--upstream", up_url, "--uvloop"]
    )
    targets["floor"] = Target("floor", f"http://127.0.0.1:{floor_port}", [floor])
    cfg = tmp / "meter.yaml"
    cfg.write_text(
        f"logging: {{level: warning}}\nledger: {{spool_dir: {json.dumps(str(tmp / 'spool'))}}}\n"
    )
    meter_args = shlex.split(os.environ.get("BENCH_METER_ARGS", ""))
    meter = _spawn([*meter_command(cfg, meter_port, up_url, tmp / "ledger.db"), *meter_args])
    targets["openai-meter"] = Target("openai-meter", f"http://127.0.0.1:{meter_port}", [meter])
    litellm = ensure_litellm()
    if litellm is not None:
        ll_port = _free_port()
        _litellm_config(tmp / "litellm.yaml", up_url)
        proc = _spawn(
            [str(litellm), "--config", str(tmp / "litellm.yaml"), "--port", str(ll_port)],
            env={
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "LITELLM_MODE": "PRODUCTION",
                "DISABLE_SCHEMA_UPDATE": "True",
            },
        )
        targets["litellm"] = Target("litellm", f"http://127.0.0.1:{ll_port}", [proc])
    results: dict[str, dict[str, float]] = {}
    try:
        path, body = BODIES["json"]
        for t in targets.values():
            await _wait_ready(t.url, path, body)
        await asyncio.sleep(2.0)
        for t in targets.values():
            t.rss_idle_mib = t.rss_mib()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for scenario in scenarios:
                for conc in clients:
                    per: dict[str, list[Sample]] = {k: [] for k in targets}
                    for t in targets.values():  # warm-up
                        await _load(session, t, scenario, conc, min(1.0, seconds))
                    for _ in range(rounds):
                        for name, t in targets.items():
                            per[name].append(await _load(session, t, scenario, conc, seconds))
                    merged = {k: _merge(v) for k, v in per.items()}
                    direct = merged["direct"]
                    for name, m in merged.items():
                        key = f"{scenario}_c{conc}_{name}"
                        results[key] = {
                            "calls": m.calls,
                            "errors": m.errors,
                            "cpu_ms_per_call": m.cpu_s / m.calls * 1000
                            if m.calls
                            else float("nan"),
                            "p50_ms": _pct(m.latencies, 50),
                            "p99_ms": _pct(m.latencies, 99),
                            "added_p50_ms": _pct(m.latencies, 50) - _pct(direct.latencies, 50),
                            "added_p99_ms": _pct(m.latencies, 99) - _pct(direct.latencies, 99),
                            "ttfb_p50_ms": _pct(m.ttfb, 50),
                            "throughput_rps": m.calls / m.seconds if m.seconds else 0.0,
                        }
        for name, t in targets.items():
            results[f"rss_{name}"] = {"idle_mib": t.rss_idle_mib, "after_mib": t.rss_mib()}
    finally:
        for t in targets.values():
            for p in t.procs:
                p.terminate()
        for t in targets.values():
            for p in t.procs:
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per scenario × clients × proxy, ratios to the floor."""
    lines = [
        "| scenario | clients | target | CPU/call ms | × floor | added p50 ms | added p99 ms "
        "| × floor p99 | req/s | TTFB p50 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results.items():
        if key.startswith("rss_") or key.endswith("_direct"):
            continue
        scenario, conc, name = key.split("_", 2)
        floor = results.get(f"{scenario}_{conc}_floor", row)
        lines.append(
            f"| {scenario} | {conc[1:]} | {name} | {row['cpu_ms_per_call']:.3f} "
            f"| {row['cpu_ms_per_call'] / floor['cpu_ms_per_call']:.2f} "
            f"| {row['added_p50_ms']:.3f} | {row['added_p99_ms']:.3f} "
            f"| {row['added_p99_ms'] / floor['added_p99_ms'] if floor['added_p99_ms'] > 0 else float('nan'):.2f} "
            f"| {row['throughput_rps']:.0f} | {row['ttfb_p50_ms']:.3f} | {int(row['errors'])} |"
        )
    lines.append("")
    lines.append("| target | RSS idle MiB | RSS after load MiB |")
    lines.append("|---|---|---|")
    for key, row in results.items():
        if key.startswith("rss_"):
            lines.append(f"| {key[4:]} | {row['idle_mib']:.0f} | {row['after_mib']:.0f} |")
    return "\n".join(lines)


def run() -> dict[str, float]:
    """For ``python -m bench``: flattened figures."""
    results = asyncio.run(run_async(*_params()))
    print(table(results))
    return {f"{k}_{m}": v for k, row in results.items() for m, v in row.items()}


def _params() -> tuple[float, int, list[int], list[str]]:
    seconds = float(os.environ.get("BENCH_SECONDS", "2"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    clients = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1,16,64").split(",")]
    scenarios = os.environ.get("BENCH_SCENARIOS", "json,sse,embeddings").split(",")
    return seconds, rounds, clients, scenarios


def main() -> None:
    results = asyncio.run(run_async(*_params()))
    print(f"load average: {os.getloadavg()}")
    print(table(results))
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
