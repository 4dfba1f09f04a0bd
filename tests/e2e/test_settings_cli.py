"""Settings precedence and start-up errors, through the real ``openai-meter`` entry point."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_settings

BIN = [sys.executable, "-c", "import sys; from proxy.cli import main; sys.exit(main())"]


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: {host: 0.0.0.0, port: 7000}\n"
        "upstream: {url: 'http://file.example', read_timeout_s: 60}\n"
        "ledger: {batch_size: 10}\n"
    )
    env = {
        "OPENAI_METER_CONFIG": str(config),
        "OPENAI_METER_PORT": "7001",
        "OPENAI_METER_UPSTREAM_URL": "http://env.example",
        "OPENAI_METER_LEDGER__BATCH_SIZE": "20",
        "OPENAI_METER_TEAMS__SEARCH__KEYS": '["sha256:0123456789ab"]',
        "OPENAI_METER_TEST_POSTGRES_URL": "postgresql://ignored",  # not a setting: ignored
    }
    s = load_settings(environ=env, cli={"--port": (("listen", "port"), "7002")})
    assert s.listen.port == 7002  # CLI
    assert s.upstream.url == "http://env.example"  # env over file
    assert s.ledger.batch_size == 20
    assert s.listen.host == "0.0.0.0"  # file over default
    assert s.upstream.read_timeout_s == 60
    assert s.upstream.connect_timeout_s == 10  # default
    assert s.teams["search"].keys == ["sha256:0123456789ab"]


@pytest.mark.parametrize(
    ("yaml_text", "env", "message"),
    [
        ("listen: {prot: 1}\n", {}, "unknown config key listen.prot (from config file"),
        (
            "",
            {"OPENAI_METER_LEDGER__BACH_SIZE": "1"},
            "unknown config key ledger.bach_size (from environment OPENAI_METER_LEDGER__BACH_SIZE)",
        ),
        (
            "",
            {"OPENAI_METER_PORT": "eighty"},
            "invalid value for listen.port (from environment OPENAI_METER_PORT)",
        ),
        (
            "upstream: {read_timeout_s: -1}\n",
            {},
            "invalid value for upstream.read_timeout_s (from config file",
        ),
        ("upstream: {url: 'ftp://x'}\n", {}, "invalid value for upstream.url (from config file"),
        ("listen: [1, 2\n", {}, "config file"),
    ],
)
def test_config_errors_name_the_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=str(config), environ=env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "env",
    [
        {"OPENAI_METER_OTEL__HEADERS": "Bearer s3cret-value"},
        {"OPENAI_METER_OTEL__HEADERS": "{authorization: [s3cret-value]}"},
        {"OPENAI_METER_ADMIN_TOKEN": "{a: s3cret-value}"},
        {"OPENAI_METER_DATABASE_URL": "[s3cret-value]"},
    ],
)
def test_config_errors_about_secret_keys_never_echo_the_value(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert "invalid value for" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_otel_endpoint_must_be_an_http_url() -> None:
    for bad in ("ftp://collector", "collector:4318", "http://", "http://c:4318/?x=1", "http://a b"):
        with pytest.raises(ConfigError, match=r"otel\.endpoint"):
            load_settings(environ={"OPENAI_METER_OTEL__ENDPOINT": bad})
    settings = load_settings(environ={"OPENAI_METER_OTEL__ENDPOINT": "https://otel.example:4318/"})
    assert settings.otel.endpoint == "https://otel.example:4318/"


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        (["serve", "--port", "70000"], {}, "listen.port (from command line --port)"),
        (["serve"], {"OPENAI_METER_LISTEN__PROT": "1"}, "listen.prot"),
        (["serve", "--config", "/nonexistent.yaml"], {}, "/nonexistent.yaml"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args: list[str], env: dict[str, str], key: str) -> None:
    result = subprocess.run(
        [*BIN, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.stderr


def test_help_lists_every_command() -> None:
    result = subprocess.run([*BIN, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("serve", "report", "prices", "db", "keys", "encodings"):
        assert command in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def test_sigterm_drains_an_in_flight_stream_then_exits_0(tmp_path: Path) -> None:
    # An upstream (the fake, in its own process) whose stream takes ~1.5 s.
    upstream_port, proxy_port = _free_port(), _free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_upstream_main", str(upstream_port), "0.3"],
        cwd=Path(__file__).resolve().parents[2],
    )
    proxy = subprocess.Popen(
        [
            *BIN,
            "serve",
            "--port",
            str(proxy_port),
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--no-db-upgrade",
        ],
        env={
            **os.environ,
            "OPENAI_METER_SERVER__SHUTDOWN_GRACE_S": "10",
            "OPENAI_METER_LOGGING__LEVEL": "warning",
        },
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (
                    _get(f"http://127.0.0.1:{proxy_port}/healthz")[0] == 200
                    and _get(f"http://127.0.0.1:{upstream_port}/v1/models")[0] == 200
                ):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
            data=b'{"model":"m","stream":true,"messages":[]}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            first = response.readline()
            assert first.startswith(b"data: ")
            proxy.send_signal(signal.SIGTERM)
            rest = response.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert proxy.wait(timeout=20) == 0
        # New connections are refused once it stopped.
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{proxy_port}/healthz", timeout=2)
    finally:
        for process in (proxy, upstream):
            if process.poll() is None:
                process.kill()
                process.wait()


def _leaves(model: object, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    assert isinstance(model, BaseModel)
    out: set[str] = set()
    for name in type(model).model_fields:
        value = getattr(model, name)
        out |= (
            _leaves(value, f"{prefix}{name}.") if isinstance(value, BaseModel) else {prefix + name}
        )
    return out


def test_config_example_documents_every_key_with_its_default() -> None:
    import yaml

    from proxy.settings import Settings

    path = Path(__file__).resolve().parents[2] / "config.example.yaml"
    data = yaml.safe_load(path.read_text())
    documented = {
        f"{section}.{key}"
        for section, keys in data.items()
        if isinstance(keys, dict) and keys
        for key in keys
    }
    documented |= {
        section for section, keys in data.items() if not isinstance(keys, dict) or not keys
    }
    assert _leaves(Settings()) <= documented
    assert load_settings(config_path=str(path), environ={}) == Settings()
