"""A newcomer's first hour (issue 12): start-up problems are one line that names the address or the
database (password masked) and create nothing; ``--upstream .../v1`` works; ``report`` without a
ledger says so. Everything through the real ``openai-meter`` entry point in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import orjson
import pytest
from sqlalchemy.engine import make_url

from proxy.config import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.postgres import PostgresDatabases
from tests.support.product import Product, share_encodings

ROOT = Path(__file__).resolve().parents[2]
BIN = [sys.executable, "-c", "import sys; from proxy.cli import main; sys.exit(main())"]


def _run(
    args: list[str], cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BIN, *args],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OPENAI_METER_LOGGING__LEVEL": "warning",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- port in use ----------------------------------------------------------------------------------


def test_port_in_use_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(["serve", "--port", str(port)], tmp_path, OPENAI_METER_LOGGING__LEVEL="info")
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert f"127.0.0.1:{port}" in line and "in use" in line
    assert "listening" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no openai-meter.db, no spool/


def test_an_unresolvable_listen_host_is_one_line(tmp_path: Path) -> None:
    result = _run(["serve", "--host", "no-such-host.invalid", "--port", "0"], tmp_path)
    assert result.returncode == 2
    assert "no-such-host.invalid:0" in _one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


# -- database URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "cause"),
    [
        (
            "postgresql://meter:s3cret-pw@127.0.0.1:{closed}/ledger",
            "postgresql://meter:***@127.0.0.1:{closed}/ledger",
            "connection refused",
        ),
        (
            "mysql://meter:s3cret-pw@db/ledger",
            "mysql://meter:***@db/ledger",
            "use sqlite or postgresql",
        ),
        ("garbage", "garbage", "not a database URL"),
        ("sqlite://", "sqlite://", "needs a SQLite file"),
        ("post://meter:s3cret-pw@h/db", "post://meter:***@h/db", "unsupported database URL scheme"),
    ],
)
def test_a_bad_or_dead_database_is_one_line_exit_2(
    tmp_path: Path, url: str, shown: str, cause: str
) -> None:
    closed = _closed_port()
    url, shown = url.format(closed=closed), shown.format(closed=closed)
    result = _run(["serve", "--port", "0", "--database-url", url], tmp_path)
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert shown in line and cause in line
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_a_database_that_does_not_exist_is_one_line(
    tmp_path: Path, pg_databases: PostgresDatabases
) -> None:
    missing = make_url(pg_databases.url).set(database="om_no_such_database_42")
    url = missing.render_as_string(hide_password=False)
    result = _run(["serve", "--port", "0", "--database-url", url], tmp_path)
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert 'database "om_no_such_database_42" does not exist' in line
    assert missing.render_as_string(hide_password=True) in line
    assert list(tmp_path.iterdir()) == []


def test_no_db_upgrade_with_a_dead_database_warns_and_readyz_shows_it(tmp_path: Path) -> None:
    url = f"postgresql://meter:s3cret-pw@127.0.0.1:{_closed_port()}/ledger"
    port = _closed_port()
    process = subprocess.Popen(
        [*BIN, "serve", "--port", str(port), "--no-db-upgrade", "--database-url", url],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_METER_LOGGING__FORMAT": "text"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except urllib.error.HTTPError as exc:
                status, body = exc.code, orjson.loads(exc.read())
                break
            except OSError:
                assert process.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
                continue
            raise AssertionError("/readyz said ready with a dead database")
        assert status == 503
        assert body["checks"]["database"] is False
        assert body["checks"]["metering"] is True  # it serves (records spool)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    warning = [line for line in stderr.splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "does not answer" in warning[0]
    assert "postgresql://meter:***@127.0.0.1" in warning[0]
    assert "s3cret-pw" not in stderr
    assert "Traceback" not in stderr


async def test_database_check_turns_ready_once_the_database_answers(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``database`` check latches: after the first answer an outage spools, /readyz stays 200."""
    import aiohttp

    import storage.service

    share_encodings(monkeypatch)
    answers = iter([False, False, True, False])

    async def ready(self: object) -> bool:
        return next(answers)

    monkeypatch.setattr(storage.service.Ledger, "ready", ready)
    async with (
        Product(fake_upstream.url, tmp_path, database={"auto_upgrade": False}) as product,
        aiohttp.ClientSession() as http,
    ):
        statuses = []
        for _ in range(3):  # the start-up probe used the first False
            async with http.get(product.url + "/readyz") as r:
                statuses.append((r.status, (await r.json())["checks"].get("database")))
    assert statuses == [(503, False), (200, True), (200, True)]


# -- --upstream with /v1 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("http://gw:9/v1", "http://gw:9"),
        ("http://gw:9/v1/", "http://gw:9"),
        ("http://gw:9", "http://gw:9"),
        ("http://gw:9/", "http://gw:9/"),
    ],
)
def test_upstream_base_url_ending_in_v1_is_the_origin(given: str, origin: str) -> None:
    settings = load_settings(cli={"--upstream": (("upstream", "url"), given)})
    assert settings.upstream.url == origin


def test_upstream_path_prefix_before_v1_is_kept() -> None:
    settings = load_settings(
        environ={"OPENAI_METER_UPSTREAM_URL": "https://gateway.example/openai/v1"}
    )
    assert settings.upstream.url == "https://gateway.example/openai"
    assert load_settings(environ={"OPENAI_METER_UPSTREAM_URL": "http://h/v10"}).upstream.url == (
        "http://h/v10"
    )


async def test_calls_through_an_upstream_given_as_a_v1_base_url_reach_v1_once(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share_encodings(monkeypatch)
    settings = load_settings(
        cli={
            "--upstream": (("upstream", "url"), fake_upstream.url + "/v1"),
            "--database-url": (("database", "url"), f"sqlite:///{tmp_path}/l.db"),
        },
        environ={"OPENAI_METER_LEDGER__SPOOL_DIR": str(tmp_path / "spool")},
    )
    async with Product(fake_upstream.url, tmp_path, settings=settings) as product:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=product.url + "/v1", max_retries=0)
        reply = await client.embeddings.create(model="text-embedding-3-small", input="hi")
        await client.close()
    assert reply.data
    assert [r.path for r in fake_upstream.requests][-1] == "/v1/embeddings"


# -- report without a ledger ----------------------------------------------------------------------


def test_report_without_a_ledger_says_so_and_creates_nothing(tmp_path: Path) -> None:
    result = _run(["report"], tmp_path)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "no ledger at sqlite:///openai-meter.db" in line
    assert str(tmp_path / "openai-meter.db") in line
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
    nested = _run(["report", "--database-url", "sqlite:///a/b/ledger.db"], tmp_path)
    assert nested.returncode == 1 and "no ledger" in _one_line(nested.stderr)
    assert list(tmp_path.iterdir()) == []  # not even the directories


def test_report_on_an_empty_sqlite_file_says_no_ledger(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    result = _run(["report", "--database-url", "sqlite:///empty.db"], tmp_path)
    assert result.returncode == 1
    assert "no ledger at sqlite:///empty.db" in _one_line(result.stderr)


def test_report_on_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_bytes(b"not sqlite at all" * 100)
    result = _run(["report", "--database-url", "sqlite:///notes.db"], tmp_path)
    assert result.returncode == 1
    assert "sqlite:///notes.db" in _one_line(result.stderr)


@pytest.mark.parametrize("url", ["garbage", "mysql://u:s3cret-pw@h/db"])
def test_report_with_an_invalid_url_is_one_line_exit_2(tmp_path: Path, url: str) -> None:
    result = _run(["report", "--database-url", url], tmp_path)
    assert result.returncode == 2
    _one_line(result.stderr)
    assert "s3cret-pw" not in result.stderr


@pytest.mark.postgres
def test_report_on_an_empty_postgres_database_says_no_ledger(
    tmp_path: Path, postgres_url: str
) -> None:
    result = _run(["report", "--database-url", postgres_url], tmp_path)
    assert result.returncode == 1
    assert "no ledger at postgresql://" in _one_line(result.stderr)
