"""Memory of ``openai-meter serve``: idle RSS, and RSS per idle open stream.

``python -m bench.memory_bench`` (``BENCH_STREAMS``, default 200). Starts ``openai-meter serve`` with
the defaults (SQLite ledger in a temp dir, ``logging.level: warning``) in its own process, in front of
a fake upstream run by this process whose chat streams send their headers and first event and then
hold until released. Reports (VmRSS from ``/proc/PID/status``, MiB):

* ``idle``: 5 s after the proxy answered its first call (no call estimated, so no encoding built),
  the serving process and its children (the SQLite ledger's writer process); ``idle_server``: the
  serving process alone; ``idle_restart``: the same after a restart on the same ledger (schema at
  its head: Alembic is not imported);
* ``idle_preload``: the same with ``metering.preload_encodings: true`` (both tiktoken encodings);
* ``per_stream_kib``: (RSS with N streams open and held - RSS after a warm-up of N/10 streams
  opened, held and finished) / N: what one more idle open stream costs, one-time costs excluded.

Every stream is released at the end and must finish with ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.compare_bench import _children, _rss_kib
from bench.proxy_bench import _free_port

CHUNK = {
    "id": "chatcmpl-mem",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
}
USAGE = {
    **CHUNK,
    "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
}
BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello"}],
    }
).encode()


class HoldingUpstream:
    """Chat streams that send headers + one event, then wait for :meth:`release`."""

    def __init__(self) -> None:
        self.release_event = asyncio.Event()
        self.open = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + json.dumps(CHUNK).encode() + b"\n\n")
        self.open += 1
        try:
            await self.release_event.wait()
        finally:
            self.open -= 1
        await resp.write(b"data: " + json.dumps(USAGE).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app


def _rss_mib(pid: int) -> float:
    """The proxy's whole footprint: the serving process and its children (the SQLite ledger's
    writer process, ``ledger.writer_process``)."""
    return sum(_rss_kib(p) for p in (pid, *_children(pid))) / 1024


def _server_mib(pid: int) -> float:
    """The serving process alone."""
    return _rss_kib(pid) / 1024


def _spawn_meter(upstream_url: str, tmp: Path, port: int, extra: str) -> subprocess.Popen[bytes]:
    cfg = tmp / "meter.yaml"
    cfg.write_text(
        f"logging: {{level: warning}}\nledger: {{spool_dir: {json.dumps(str(tmp / 'spool'))}}}\n"
        + extra
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--upstream",
            upstream_url,
            "--database-url",
            f"sqlite:///{tmp / 'ledger.db'}",
        ],
        stdout=subprocess.DEVNULL,
    )


async def _start_meter(upstream_url: str, tmp: Path, extra: str = "") -> subprocess.Popen[bytes]:
    port = _free_port()
    proc = _spawn_meter(upstream_url, tmp, port, extra)
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            try:
                async with session.get(proc.url + "/healthz") as r:  # type: ignore[attr-defined]
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("openai-meter did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _hold_streams(
    session: aiohttp.ClientSession, url: str, upstream: HoldingUpstream, count: int
) -> tuple[list[asyncio.Task[bytes]], list[asyncio.Event]]:
    """Open ``count`` streams through the proxy; returns once each client got its first event."""
    firsts = [asyncio.Event() for _ in range(count)]

    async def one(first: asyncio.Event) -> bytes:
        async with session.post(
            url + "/v1/chat/completions",
            data=BODY,
            headers={"Authorization": "Bearer sk-mem", "Content-Type": "application/json"},
        ) as r:
            head = await r.content.readuntil(b"\n\n")
            first.set()
            return head + await r.read()

    tasks = [asyncio.create_task(one(f)) for f in firsts]
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 120)
    return tasks, firsts


async def _finish(upstream: HoldingUpstream, tasks: list[asyncio.Task[bytes]]) -> None:
    upstream.release_event.set()
    bodies = await asyncio.gather(*tasks)
    assert all(b.rstrip().endswith(b"data: [DONE]") for b in bodies), "a stream did not finish"
    upstream.release_event = asyncio.Event()


async def run_async(streams: int) -> dict[str, float]:
    upstream = HoldingUpstream()
    runner = web.AppRunner(upstream.app())
    await runner.setup()
    up_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()
    up_url = f"http://127.0.0.1:{up_port}"
    out: dict[str, float] = {"streams": streams}
    connector = aiohttp.TCPConnector(limit=0)
    try:
        with tempfile.TemporaryDirectory(prefix="openai-meter-mem-") as d:
            tmp = Path(d)
            (tmp / "eager").mkdir()
            eager = await _start_meter(
                up_url, tmp / "eager", "metering: {preload_encodings: true}\n"
            )
            try:
                await asyncio.sleep(8.0)  # the preload thread: ~1 s per encoding, more under load
                out["idle_preload_mib"] = _rss_mib(eager.pid)
            finally:
                _stop(eager)
            (tmp / "lazy").mkdir()
            meter = await _start_meter(up_url, tmp / "lazy")
            url = meter.url  # type: ignore[attr-defined]
            try:
                async with aiohttp.ClientSession(connector=connector) as session:
                    tasks, _ = await _hold_streams(session, url, upstream, 1)
                    await _finish(upstream, tasks)
                    await asyncio.sleep(5.0)
                    out["idle_mib"] = _rss_mib(meter.pid)
                    out["idle_server_mib"] = _server_mib(meter.pid)
                    warm = max(1, streams // 10)
                    tasks, _ = await _hold_streams(session, url, upstream, warm)
                    await _finish(upstream, tasks)
                    await asyncio.sleep(1.0)
                    before = _rss_mib(meter.pid)
                    tasks, _ = await _hold_streams(session, url, upstream, streams)
                    await asyncio.sleep(1.0)
                    held = _rss_mib(meter.pid)
                    await _finish(upstream, tasks)
                    out["rss_before_streams_mib"] = before
                    out["rss_streams_held_mib"] = held
                    out["per_stream_kib"] = (held - before) * 1024 / streams
                    await asyncio.sleep(1.0)
                    out["rss_after_streams_mib"] = _rss_mib(meter.pid)
            finally:
                _stop(meter)
            # A restart on the same ledger (the usual production start: the schema is at its
            # head, so Alembic is not imported).
            meter = await _start_meter(up_url, tmp / "lazy")
            try:
                async with aiohttp.ClientSession() as session:
                    tasks, _ = await _hold_streams(session, meter.url, upstream, 1)  # type: ignore[attr-defined]
                    await _finish(upstream, tasks)
                    await asyncio.sleep(5.0)
                    out["idle_restart_mib"] = _rss_mib(meter.pid)
                    out["idle_restart_server_mib"] = _server_mib(meter.pid)
            finally:
                _stop(meter)
    finally:
        await runner.cleanup()
    return out


def run(streams: int = 200) -> dict[str, float]:
    return asyncio.run(run_async(streams))


def main() -> None:
    streams = int(os.environ.get("BENCH_STREAMS", "200"))
    result = run(streams)
    print(f"load average: {os.getloadavg()}")
    for key, value in result.items():
        print(f"{key:24s} {value:9.1f}")


if __name__ == "__main__":
    main()
