"""Stream path cost per byte, whatever the line length; and the product against a hostile stream.

``python -m bench.stream_bench`` prints two sets of figures (copy them to docs/performance.md):

* ``cpu_ms_per_mb[L]``: CPU (process time) per MB of SSE pushed through the usage-chunk stripper and
  the chat stream tap (its SSE decoder) - the pure per-byte work of a metered stream - fed in 64 KiB
  chunks as aiohttp delivers them, for data lines of L bytes, 1 KB ... 64 MB (64 MB of stream each).
  Linear means flat: the same ms/MB at every L. Lines over ``metering.max_event_bytes`` (16 MiB by
  default) are dropped by the decoder as they arrive: cheaper, still flat.
* ``hostile_*``: the real product (``openai-meter serve``, its own process) between a hostile upstream
  (``tests.support.hostile_upstream``: a 50 MB no-newline line; a 100 KB gzip bomb of 100 MB) and a
  client process reading the stream; this process asks ``/healthz`` every 20 ms meanwhile and samples
  the proxy's RSS. Reported: first-byte and total time at the client, /healthz max and median, the
  proxy's RSS growth and CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from proxy.usage.rewrite import UsageChunkStripper
from proxy.usage.taps import ChatStreamTap

MB = 1024 * 1024
CHUNK = 64 * 1024
LINE_LENGTHS = (1024, 16 * 1024, 256 * 1024, MB, 4 * MB, 16 * MB, 64 * MB)
VOLUME = 64 * MB
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stream(line_length: int) -> bytes:
    head = b'data: {"choices":[{"index":0,"delta":{"content":"'
    tail = b'"}}]}\n\n'
    event = head + b"a" * max(0, line_length - len(head) - len(tail) + 2) + tail
    return event * max(1, VOLUME // len(event)) + b"data: [DONE]\n\n"


def cpu_ms_per_mb(line_length: int) -> float:
    data = _stream(line_length)
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    stripper = UsageChunkStripper()
    tap = ChatStreamTap()
    started = time.process_time()
    for piece in pieces:
        stripper.feed(piece)
        tap.feed(piece)
    stripper.flush()
    tap.finish(complete=True)
    return (time.process_time() - started) * 1000 / (len(data) / MB)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


_CLIENT = """
import asyncio, json, sys, time, aiohttp
async def main():
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    started = time.perf_counter(); first = None; size = 0
    async with aiohttp.ClientSession() as s, s.post(sys.argv[1], json=body) as r:
        async for chunk in r.content.iter_any():
            first = first if first is not None else time.perf_counter() - started
            size += len(chunk)
    print(json.dumps({"first_s": first, "total_s": time.perf_counter() - started, "bytes": size}))
asyncio.run(main())
"""


ROOT = Path(__file__).resolve().parents[1]


def _servers(
    mode: str, megabytes: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    """The hostile upstream and the product (``openai-meter serve``), each in its own process."""
    py = sys.executable
    upstream = subprocess.Popen(
        [py, "-m", "tests.support.hostile_upstream", mode, str(megabytes)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert upstream.stdout is not None
    up_url = f"http://127.0.0.1:{int(upstream.stdout.readline())}"
    tmp = Path(tempfile.mkdtemp(prefix="openai-meter-bench-"))
    port = 18000 + os.getpid() % 1000
    (tmp / "c.yaml").write_text(
        f"logging: {{level: warning}}\nledger: {{spool_dir: {json.dumps(str(tmp / 'spool'))}}}\n"
        # Built at start as before issue 16, so an estimate's first encoding build does not land
        # in the RSS and CPU measured during the hostile stream.
        "metering: {preload_encodings: true}\n"
    )
    proxy = subprocess.Popen(
        [py, "-m", "proxy.cli", "serve", "--config", str(tmp / "c.yaml"), "--port", str(port),
         "--upstream", up_url, "--database-url", f"sqlite:///{tmp / 'l.db'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )  # fmt: skip
    return upstream, proxy, f"http://127.0.0.1:{port}"


async def _hostile(mode: str, megabytes: int) -> dict[str, float]:
    py = sys.executable
    upstream, proxy, url = _servers(mode, megabytes)
    health: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(10)  # let the start-up preload of the tiktoken encodings finish
            rss0, cpu0 = _rss(proxy.pid), _cpu_seconds(proxy.pid)
            rss_peak = rss0
            client = await asyncio.create_subprocess_exec(
                py, "-c", _CLIENT, url + "/v1/chat/completions", stdout=subprocess.PIPE
            )
            wait = asyncio.ensure_future(client.communicate())
            while not wait.done():
                started = time.perf_counter()
                async with session.get(url + "/healthz") as r:
                    await r.read()
                health.append(time.perf_counter() - started)
                rss_peak = max(rss_peak, _rss(proxy.pid))
                await asyncio.sleep(0.02)
            out, _ = await wait
            got = json.loads(out)
            cpu = _cpu_seconds(proxy.pid) - cpu0
    finally:
        proxy.terminate()
        upstream.terminate()
        proxy.wait(30)
        upstream.wait(30)
    key = f"hostile_{mode}_{megabytes}mb"
    return {
        f"{key}_client_first_byte_ms": got["first_s"] * 1000,
        f"{key}_client_total_s": got["total_s"],
        f"{key}_client_mb": got["bytes"] / MB,
        f"{key}_healthz_max_ms": max(health) * 1000,
        f"{key}_healthz_median_ms": statistics.median(health) * 1000,
        f"{key}_healthz_samples": float(len(health)),
        f"{key}_healthz_first_ms": health[0] * 1000 if health else 0.0,
        f"{key}_proxy_rss_growth_mb": (rss_peak - rss0) / MB,
        f"{key}_proxy_cpu_s": cpu,
    }


def run() -> dict[str, float]:
    results = {f"cpu_ms_per_mb[{length}]": cpu_ms_per_mb(length) for length in LINE_LENGTHS}
    results.update(asyncio.run(_hostile("line", 50)))
    results.update(asyncio.run(_hostile("gzip", 100)))
    return results


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:52s} {value:12.3f}")
