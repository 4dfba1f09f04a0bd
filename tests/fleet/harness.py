"""Real processes for the fleet test: replicas of ``openai-meter serve`` on one PostgreSQL, the fake
upstream as its own process, and helpers to read the shared ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from storage.engine import create_engine
from storage.schema import usage_records
from tests.support.prometheus import free_port

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "fleet-admin-token"
CLIENT_KEY = "sk-fleet-client-key"


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.HTTPError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout}s: {last!r}")


class FakeUpstreamProcess:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._log = (workdir / "upstream.log").open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet.fake_main", str(self.port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == b"ready"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()


class Replica:
    """One ``openai-meter serve`` process; its spool (and journal) live in ``workdir``."""

    def __init__(self, name: str, workdir: Path, config: Path, database_url: str, upstream: str):
        self.name = name
        self.workdir = workdir
        self.config = config
        self.database_url = database_url
        self.upstream = upstream
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "OPENAI_METER_LEDGER__SPOOL_DIR": str(self.workdir / "spool"),
            "OPENAI_METER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        log = (self.workdir / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy.cli",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
                "--upstream",
                self.upstream,
                "--no-db-upgrade",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        _wait_http(f"{self.url}/readyz", timeout, self.proc)

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.workdir / "serve.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, *, admin: bool = True) -> Any:
        request = urllib.request.Request(f"{self.url}{path}")
        if admin:
            request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.read()


def write_config(path: Path, extra: dict[str, Any] | None = None) -> Path:
    data: dict[str, Any] = {
        "upstream": {"api_key": "sk-upstream-real-key-for-virtual-keys"},
        "virtual_keys": {"enabled": True},
        "ledger": {"flush_interval_ms": 50},
        "server": {"shutdown_grace_s": 10},
        "logging": {"level": "warning"},
    }
    for key, value in (extra or {}).items():
        data.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ledger(database_url: str) -> list[dict[str, Any]]:
    """Every ledger row's identity and money columns (a fresh engine per read)."""

    async def read() -> list[dict[str, Any]]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                c = usage_records.c
                result = await conn.execute(
                    select(
                        c.id,
                        c.request_id,
                        c.response_id,
                        c.path,
                        c.method,
                        c.team,
                        c.tags,
                        c.cost_usd,
                        c.price_ref,
                        c.input_tokens,
                        c.output_tokens,
                        c.status_code,
                        c.outcome,
                    )
                )
                return [dict(row._mapping) for row in result]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def phase_rows(database_url: str, phase: str) -> list[dict[str, Any]]:
    return [r for r in ledger(database_url) if (r["tags"] or {}).get("phase") == phase]


def wait_phase_rows(
    database_url: str, phase: str, count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = phase_rows(database_url, phase)
        if len(rows) >= count:
            return rows
        time.sleep(0.2)
    return rows
