"""``openai-meter demo`` from a clean environment (no key, no network beyond loopback), and its
simulated upstream: labelled, OpenAI-shaped, deterministic, and never reachable from ``serve``."""

from __future__ import annotations

import ast
import asyncio
import base64
import io
import os
import re
import struct
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import openai
import orjson
import pytest
from aiohttp import ClientSession, web
from sqlalchemy import update

from proxy.demo.run import TEAMS, TRAFFIC, run_demo
from proxy.demo.simulator import FINGERPRINT, SIMULATOR_HEADER, Simulator
from proxy.http.server import bind, bound_port
from storage.engine import create_engine
from storage.schema import usage_records
from tests.support.product import ledger_rows

ROOT = Path(__file__).resolve().parents[2]
BIN = [sys.executable, "-c", "import sys; from proxy.cli import main; sys.exit(main())"]
GOLDEN = ROOT / "tests" / "data" / "demo_report.table"


def _clean_env() -> dict[str, str]:
    """No OpenAI key, no meter settings, and proxies that would break any non-loopback call."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        HTTPS_PROXY="http://127.0.0.1:9",  # nothing listens there: a network call would fail
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def test_demo_runs_without_key_or_network_and_its_report_is_right(tmp_path: Path) -> None:
    result = subprocess.run(
        [*BIN, "demo", "--once", "--dir", str(tmp_path / "demo")],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SIMULATOR" in out
    assert f"Sent {len(TRAFFIC)} of {len(TRAFFIC)} calls" in out
    page = re.search(r"Spend page:  (http://127\.0\.0\.1:(\d+)/meter/)", out)
    assert page is not None

    # The report: every team, the unassigned caller, nothing unpriced or estimated, and a
    # TOTAL that is the exact sum of the rows and of the ledger.
    table = out[out.index("spend ") : out.index("\nSpend page")].strip("\n").splitlines()
    body = [line for line in table[3:] if not line.startswith("=")]
    total = body.pop()
    assert total.startswith("TOTAL")
    teams = {line.split()[0] for line in body}
    assert teams == {*TEAMS, "unassigned"}
    assert all(line.split()[-2:] == ["0", "0"] for line in [*body, total])  # unpriced, estimated
    row_costs = [Decimal(line.split()[-3]) for line in body]
    assert all(cost > 0 for cost in row_costs)
    assert Decimal(total.split()[-3]) == sum(row_costs, Decimal(0))
    assert int(total.split()[1]) == len(TRAFFIC)
    rows = asyncio.run(ledger_rows(f"sqlite:///{tmp_path / 'demo' / 'openai-meter-demo.db'}"))
    assert len(rows) == len(TRAFFIC)
    assert sum(r["cost_usd"] for r in rows) == Decimal(total.split()[-3])
    assert {r["usage_source"] for r in rows} == {"reported"}
    assert sum(1 for r in rows if r["stream"]) == sum(1 for c in TRAFFIC if c.body.get("stream"))
    # Deterministic: the same table every run (the header's times aside).
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text("\n".join(table[1:]) + "\n")
    assert "\n".join(table[1:]) + "\n" == GOLDEN.read_text()
    assert list(tmp_path.iterdir()) == [tmp_path / "demo"]  # nothing in the working directory


def test_demo_port_in_use_is_one_line(tmp_path: Path) -> None:
    sockets = bind("127.0.0.1", 0)
    try:
        result = subprocess.run(
            [*BIN, "demo", "--once", "--port", str(bound_port(sockets))],
            cwd=tmp_path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for sock in sockets:
            sock.close()
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "in use" in result.stderr


def test_nothing_but_the_demo_imports_the_simulator() -> None:
    """``serve`` (app, config, commands other than demo) can never select the simulator."""
    offenders = []
    for path in (ROOT / "proxy").rglob("*.py"):
        if "demo" in path.parts or path.name == "demo.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{path}: {n}" for n in names if n.startswith("proxy.demo")]
    assert offenders == []
    assert "simulat" not in (ROOT / "config.example.yaml").read_text().lower()


# -- the simulator itself (through the official SDK, as the demo's users would) --------------------


@pytest.fixture
async def simulator_url() -> object:
    sockets = bind("127.0.0.1", 0)
    runner = web.AppRunner(Simulator().app)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock).start()
    yield f"http://127.0.0.1:{bound_port(sockets)}/v1"
    await runner.cleanup()


async def test_simulator_speaks_openai_and_labels_itself(simulator_url: str) -> None:
    client = openai.AsyncOpenAI(api_key="anything", base_url=simulator_url, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert raw.headers[SIMULATOR_HEADER] == "1"
    chat = raw.parse()
    assert chat.model == "gpt-4o-mini-2024-07-18" and chat.system_fingerprint == FINGERPRINT
    assert (chat.choices[0].message.content or "").startswith("[simulated]")
    assert chat.usage is not None and chat.usage.total_tokens > 0
    again = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert again.usage == chat.usage  # deterministic

    chunks = [
        c
        async for c in await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[simulated]")
    plain = [
        c
        async for c in await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
        )
    ]
    assert all(c.usage is None and c.choices for c in plain)

    vectors = await client.embeddings.create(model="text-embedding-3-small", input=["a", "bb"])
    assert [len(d.embedding) for d in vectors.data] == [16, 16]
    assert vectors.usage.prompt_tokens == 2
    await client.close()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/chat/completions", b"", 400),
        ("/chat/completions", b"[1,2]", 400),
        ("/chat/completions", b'{"model": 5}', 400),
        ("/chat/completions", b"\xff\xfe", 400),
        ("/embeddings", b'{"model": "m", "input": [1, 2]}', 400),
        ("/embeddings", b'{"model": "m", "input": []}', 400),
        ("/audio/speech", b"{}", 404),
    ],
)
async def test_simulator_refuses_bad_requests_in_openai_shape(
    simulator_url: str, path: str, body: bytes, status: int
) -> None:
    async with ClientSession() as http, http.post(simulator_url + path, data=body) as r:
        assert r.status == status
        error = orjson.loads(await r.read())["error"]
        assert set(error) == {"message", "type", "param", "code"}


async def test_simulator_base64_embeddings_decode(simulator_url: str) -> None:
    async with (
        ClientSession() as http,
        http.post(
            simulator_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": "x", "encoding_format": "base64"},
        ) as r,
    ):
        document = orjson.loads(await r.read())
    raw = base64.b64decode(document["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(raw) // 4}f", raw)) == 16


def _report_total(table: str) -> tuple[int, Decimal]:
    (total,) = [line for line in table.splitlines() if line.startswith("TOTAL")]
    return int(total.split()[1]), Decimal(total.split()[-3])


async def test_a_second_demo_in_the_same_dir_reports_its_own_calls(tmp_path: Path) -> None:
    """``demo --once --dir D`` twice: the ledger keeps both runs, each report shows its own run
    (the second once waited on the total row count, which the first run's rows already met, and
    printed an empty report -- or, a second later, the first run's rows)."""
    url = f"sqlite:///{tmp_path / 'openai-meter-demo.db'}"
    first = await run_demo(tmp_path, out=io.StringIO())
    engine = create_engine(url)
    try:  # label the first run's rows: none may show up in the second report
        async with engine.begin() as conn:
            await conn.execute(update(usage_records).values(team="first-run"))
    finally:
        await engine.dispose()
    out = io.StringIO()
    second = await run_demo(tmp_path, out=out)
    assert first.calls == second.calls == len(TRAFFIC)
    assert second.report in out.getvalue()
    assert _report_total(second.report) == _report_total(first.report)
    assert _report_total(second.report)[0] == len(TRAFFIC)
    assert "first-run" not in second.report
    assert {line.split()[0] for line in second.report.splitlines()[3:-2]} == {*TEAMS, "unassigned"}
    assert len(second.records) == len(TRAFFIC)
    assert not {r["id"] for r in first.records} & {r["id"] for r in second.records}
    assert len(await ledger_rows(url)) == 2 * len(TRAFFIC)
