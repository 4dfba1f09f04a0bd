"""Where the proxy's CPU goes: py-spy samples of ``openai-meter serve`` (or the bare baseline) under load.

Run: ``.venv/bin/python -m bench.profile_proxy [json|sse] [meter|bare]`` (env ``PROFILE_SECONDS``,
``PROFILE_CONCURRENCY``). Starts the fake upstream and the target as subprocesses (like
``bench.proxy_bench``), drives load from this process, records the target with py-spy and prints
the busiest frames: inclusive share (a frame anywhere on the stack) and self share (the leaf).
Idle frames (the selector waiting, thread-pool workers waiting on their queue) are not counted.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench.proxy_bench import PAYLOAD, _batch, _free_port, _start, _wait_ready

# Samples whose leaf is one of these are the process waiting, not working.
_IDLE_LEAF = re.compile(
    r"select \(selectors\.py|_worker \(concurrent/futures/thread\.py|wait \(threading\.py"
    r"|run \(aiosqlite/core\.py|get \(queue\.py|_wait_for_tstate_lock"
)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)"; drop the line number.
    return re.sub(r":\d+\)$", ")", frame.strip())


def aggregate(raw: str, top: int = 40) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        if _IDLE_LEAF.search(frames[-1]):
            continue
        count = int(count_text)
        busy += count
        leaf[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not busy:
        return "no busy samples"
    out = [f"busy samples: {busy}", "", "inclusive %  frame"]
    out += [f"{100 * n / busy:10.1f}  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self %       frame"]
    out += [f"{100 * n / busy:10.1f}  {name}" for name, n in leaf.most_common(top)]
    return "\n".join(out)


async def _load(url: str, body: bytes, seconds: float, concurrency: int) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    calls = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        while loop.time() < deadline:
            await _batch(session, url, body, 100, concurrency)
            calls += 100
    return calls


async def _run(scenario: str, target: str, seconds: float, concurrency: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="openai-meter-profile-"))
    py = sys.executable
    up_port, port = _free_port(), _free_port()
    upstream = _start("upstream", [py, "-m", "bench.upstream", "--port", str(up_port)], up_port)
    if target == "bare":
        args = [py, "-m", "bench.bare_proxy", "--port", str(port), "--upstream", upstream.url]
    else:
        cfg = tmp / "config.yaml"
        cfg.write_text(
            f"logging: {{level: warning}}\nledger: {{spool_dir: {json.dumps(str(tmp / 'spool'))}}}\n"
        )
        args = [
            py, "-m", "proxy.cli", "serve", "--config", str(cfg), "--port", str(port),
            "--upstream", upstream.url, "--database-url", f"sqlite:///{tmp / 'ledger.db'}",
        ]  # fmt: skip
    server = _start(target, args, port)
    body = json.dumps({**PAYLOAD, "stream": scenario == "sse"}).encode()
    out = tmp / "profile.txt"
    try:
        await _wait_ready(upstream.url)
        await _wait_ready(server.url)
        await _load(server.url, body, 2.0, concurrency)  # warm-up
        spy = await asyncio.create_subprocess_exec(
            str(Path(py).parent / "py-spy"), "record", "-p", str(server.proc.pid), "-o", str(out),
            "-f", "raw", "-d", str(int(seconds)), "-r", "200", "--nonblocking",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        calls = await _load(server.url, body, seconds, concurrency)
        await spy.wait()
    finally:
        for proc in (server.proc, upstream.proc):
            proc.terminate()
        for proc in (server.proc, upstream.proc):
            proc.wait(timeout=40)
    return f"{target} {scenario} c{concurrency}: {calls} calls\n" + aggregate(out.read_text())


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "json"
    target = sys.argv[2] if len(sys.argv) > 2 else "meter"
    seconds = float(os.environ.get("PROFILE_SECONDS", "10"))
    concurrency = int(os.environ.get("PROFILE_CONCURRENCY", "4"))
    print(asyncio.run(_run(scenario, target, seconds, concurrency)))


if __name__ == "__main__":
    main()
