"""A real Prometheus server for tests: loopback only, free port, temp storage, 1 s scrapes.

No binary -> the test is skipped with the reason, unless ``OPENAI_METER_REQUIRE_PROMETHEUS=1``
(set by ``.ci/run``), where it fails. ``OPENAI_METER_PROMETHEUS_BIN`` may point at a binary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml


def prometheus_binary() -> str:
    """The binary's path, or skip / fail (per env) saying why."""
    path = os.environ.get("OPENAI_METER_PROMETHEUS_BIN") or shutil.which("prometheus")
    if path:
        return path
    reason = (
        "no prometheus binary on PATH (install the Debian package 'prometheus' "
        "or set OPENAI_METER_PROMETHEUS_BIN)"
    )
    if os.environ.get("OPENAI_METER_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{reason}; OPENAI_METER_REQUIRE_PROMETHEUS=1")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, *, targets: list[str], rule_files: list[Path], job: str = "openai-meter"
    ) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        last_error = ""
        for _ in range(3):  # the free port may be taken between picking and binding
            self.port = free_port()
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=self._log.open("ab"),
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
            if self._wait_ready(timeout=30):
                return
            last_error = self.log_tail()
            self.stop()
        raise RuntimeError(f"prometheus did not become ready:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    # --- HTTP API ---------------------------------------------------------------------------------

    async def api(self, session: aiohttp.ClientSession, path: str, **params: str) -> Any:
        async with session.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        data = await self.api(session, "query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def wait_for(
        self,
        session: aiohttp.ClientSession,
        expr: str,
        predicate: Any,
        *,
        within_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds (scrapes are asynchronous)."""
        deadline = time.monotonic() + within_s
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = await self.query(session, expr)
            if predicate(result):
                return result
            await asyncio.sleep(0.25)
        raise AssertionError(f"timed out waiting on {expr!r}; last result {result}")
