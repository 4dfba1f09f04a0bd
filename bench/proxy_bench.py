"""End-to-end overhead: direct to a fake upstream vs a bare aiohttp pass-through vs openai-meter.

Each server runs in its own process; the load generator is this process. We report, per scenario and
concurrency, the median and p99 client latency per target, the latency each proxy *adds* over going
direct, and the server-side CPU each proxy spends per call (from /proc/<pid>/stat). Targets are run in
interleaved rounds so a noisy neighbour hits all of them alike; compare ratios within one run.
``BENCH_OTEL=1`` adds ``meter_otel``: the product with OpenTelemetry export on, to a local OTLP sink
(``bench/otlp_sink.py``); its CPU includes the export thread's encoding and POSTs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAYLOAD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str


async def _wait_ready(url: str, wait_s: float = 90.0) -> None:
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.post(url + "/v1/chat/completions", json=PAYLOAD) as r:
                    await r.read()
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def meter_command(config: Path, port: int, upstream: str, ledger: Path) -> list[str]:
    """``openai-meter serve`` as the benches run it: its own config, port and SQLite ledger."""
    return [
        sys.executable,
        "-m",
        "proxy.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--upstream",
        upstream,
        "--database-url",
        f"sqlite:///{ledger}",
    ]


def _start(name: str, args: list[str], port: int, env: dict[str, str] | None = None) -> Server:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    return Server(name, proc, f"http://127.0.0.1:{port}")


async def _batch(
    session: aiohttp.ClientSession, url: str, body: bytes, n: int, concurrency: int
) -> list[float]:
    latencies: list[float] = []
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            async with session.post(
                url + "/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
            ) as r:
                await r.read()
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _run_async(requests: int, rounds: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="openai-meter-bench-"))
    up_port, bare_port, meter_port = _free_port(), _free_port(), _free_port()
    fwd_port = _free_port()
    py = sys.executable
    upstream = _start("upstream", [py, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    up_url = upstream.url
    bare = _start(
        "bare",
        [py, "-m", "bench.bare_proxy", "--port", str(bare_port), "--upstream", up_url],
        bare_port,
    )
    # The product's forwarder with metering off: splits the overhead into forwarding vs metering.
    forward = _start(
        "forward",
        [py, "-m", "bench.forward_only", "--port", str(fwd_port), "--upstream", up_url],
        fwd_port,
    )
    cfg = tmp / "config.yaml"
    cfg.write_text(
        f"logging: {{level: warning}}\nledger: {{spool_dir: {json.dumps(str(tmp / 'spool'))}}}\n"
    )
    meter = _start(
        "meter",
        meter_command(cfg, meter_port, up_url, tmp / "ledger.db"),
        meter_port,
    )
    servers = {"direct": upstream, "bare": bare, "forward": forward, "meter": meter}
    sink: subprocess.Popen[bytes] | None = None
    if os.environ.get("BENCH_OTEL") == "1":
        # The product with OpenTelemetry export on, to a local collector stand-in.
        sink_port, otel_port = _free_port(), _free_port()
        sink = _start(
            "otlp", [py, "-m", "bench.otlp_sink", "--port", str(sink_port)], sink_port
        ).proc
        otel_cfg = tmp / "otel.yaml"
        otel_cfg.write_text(
            "logging: {level: warning}\n"
            f"ledger: {{spool_dir: {json.dumps(str(tmp / 'spool-otel'))}}}\n"  # one spool each
            f"otel: {{enabled: true, endpoint: 'http://127.0.0.1:{sink_port}'}}\n"
        )
        servers["meter_otel"] = _start(
            "meter_otel",
            [
                py, "-m", "proxy.cli", "serve", "--config", str(otel_cfg),
                "--port", str(otel_port), "--upstream", up_url,
                "--database-url", f"sqlite:///{tmp / 'ledger-otel.db'}",
            ],
            otel_port,
        )  # fmt: skip
    results: dict[str, float] = {}
    try:
        for s in servers.values():
            await _wait_ready(s.url)
        scenarios = {
            "json": json.dumps(PAYLOAD).encode(),
            "sse": json.dumps({**PAYLOAD, "stream": True}).encode(),
        }
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for scen, body in scenarios.items():
                for conc in (1, 16):
                    lat: dict[str, list[float]] = {k: [] for k in servers}
                    cpu: dict[str, float] = dict.fromkeys(servers, 0.0)
                    # warm-up
                    for s in servers.values():
                        await _batch(session, s.url, body, 200, conc)
                    for _ in range(rounds):
                        for name, s in servers.items():
                            c0 = _cpu_seconds(s.proc.pid)
                            lat[name] += await _batch(session, s.url, body, requests, conc)
                            cpu[name] += _cpu_seconds(s.proc.pid) - c0
                    total = requests * rounds
                    med = {k: statistics.median(v) * 1000 for k, v in lat.items()}
                    p99 = {k: statistics.quantiles(v, n=100)[98] * 1000 for k, v in lat.items()}
                    key = f"{scen}_c{conc}"
                    for name in servers:
                        results[f"{key}_{name}_median_ms"] = med[name]
                        results[f"{key}_{name}_p99_ms"] = p99[name]
                        results[f"{key}_{name}_cpu_ms_per_call"] = cpu[name] / total * 1000
                    for name in servers:
                        if name != "direct":
                            results[f"{key}_{name}_added_median_ms"] = med[name] - med["direct"]
                    # the metering cost on top of a bare pass-through, per call
                    for name in servers:
                        if name not in ("direct", "bare"):
                            results[f"{key}_{name}_vs_bare_cpu_ratio"] = (
                                cpu[name] / cpu["bare"] if cpu["bare"] else float("nan")
                            )
    finally:
        if sink is not None:
            sink.terminate()
        for s in servers.values():
            s.proc.terminate()
        for s in servers.values():
            try:
                s.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                s.proc.kill()
    return results


def run(requests: int = 1000, rounds: int = 3) -> dict[str, float]:
    return asyncio.run(_run_async(requests, rounds))


def main() -> None:
    requests = int(os.environ.get("BENCH_REQUESTS", "1000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    for key, value in run(requests, rounds).items():
        print(f"{key:48s} {value:10.3f}")


if __name__ == "__main__":
    main()
