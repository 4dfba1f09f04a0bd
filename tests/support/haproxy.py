"""A real HAProxy (Debian's ``haproxy``) in front of replicas on loopback, for the fleet test.

Round-robin per request, health checks on ``/readyz``, a failed connection re-dispatched to
another replica (as a production load balancer is set up)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.prometheus import free_port


def haproxy_binary() -> str:
    path = os.environ.get("OPENAI_METER_HAPROXY_BIN") or shutil.which("haproxy")
    if path is None:
        for candidate in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
            if os.access(candidate, os.X_OK):
                path = candidate
                break
    if path:
        return path
    reason = "no haproxy binary (install the Debian package 'haproxy')"
    if os.environ.get("OPENAI_METER_REQUIRE_HAPROXY") == "1":
        pytest.fail(f"{reason}; OPENAI_METER_REQUIRE_HAPROXY=1")
    pytest.skip(reason)


CONFIG = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    retries 3
    option redispatch
frontend meter
    bind 127.0.0.1:{port}
    default_backend replicas
listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 1
{servers}
"""


class HAProxy:
    def __init__(self, workdir: Path) -> None:
        self.binary = haproxy_binary()
        self.workdir = workdir
        self.port = 0
        self.stats_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, backends: list[int]) -> None:
        self.port, self.stats_port = free_port(), free_port()
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{port} check" for i, port in enumerate(backends)
        )
        config = self.workdir / "haproxy.cfg"
        config.write_text(
            CONFIG.format(port=self.port, stats_port=self.stats_port, servers=servers)
        )
        check = subprocess.run([self.binary, "-c", "-f", str(config)], capture_output=True)
        assert check.returncode == 0, check.stderr.decode(errors="replace")
        log = (self.workdir / "haproxy.log").open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        self.wait_up(len(backends))

    def servers_up(self) -> int:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2
        ) as r:
            lines = r.read().decode().splitlines()
        return sum(1 for line in lines if line.startswith("replicas,r") and ",UP" in line)

    def wait_up(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.servers_up() >= count:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"haproxy: fewer than {count} replicas up after {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
