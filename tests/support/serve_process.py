"""``openai-meter serve`` as a real subprocess, for tests: start it, wait until healthy."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
BIN = [sys.executable, "-c", "import sys; from proxy.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``openai-meter serve ARGS`` in ``cwd`` (logging at warning unless ``env`` says otherwise;
    stdout/stderr piped)."""
    return await asyncio.create_subprocess_exec(
        *BIN,
        "serve",
        *args,
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OPENAI_METER_LOGGING__LEVEL": "warning",
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_healthy(
    url: str, process: asyncio.subprocess.Process, path: str = "/healthz"
) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert process.returncode is None, "openai-meter serve exited during start-up"
            try:
                async with http.get(url + path) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"openai-meter serve did not answer {path} in 30 s")
