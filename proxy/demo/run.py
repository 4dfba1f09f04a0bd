"""``openai-meter demo``: the real proxy (``create_app``) in front of the simulated upstream.

1. start :class:`~proxy.demo.simulator.Simulator` on a free loopback port;
2. bind the proxy's port, start the product with a ledger in ``directory`` and three configured
   teams (search, support, research: each with its own demo key) -- the same start-up as ``serve``;
3. send :data:`TRAFFIC` through the proxy the way an SDK would (chat, streamed chat with and
   without ``include_usage``, embeddings; tags; one call from a key no team owns);
4. wait until every call is in the ledger, print the report (``team,model``) and the URLs;
5. with ``wait``, keep serving until Ctrl-C so the spend page and ``/meter/*`` can be tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

from aiohttp import ClientSession, web

from proxy.admin.report_query import load_report
from proxy.admin.reporting import Window, to_table
from proxy.app import LEDGER_KEY, SERVER_KWARGS, create_app
from proxy.demo.simulator import SIMULATOR_HEADER, Simulator
from proxy.http.server import bind, bound_port, serve
from proxy.settings import Settings
from proxy.teams.attribution import key_fingerprint
from storage.queries import fetch_records

TEAMS: Final = ("search", "support", "research")
OUTSIDER: Final = "outsider"  # a key no team lists: its calls are 'unassigned'


def demo_key(team: str) -> str:
    """An obviously fake API key per demo team (the simulator accepts anything)."""
    return f"sk-demo-{team}-not-a-real-key"


@dataclass(frozen=True, slots=True)
class Call:
    team: str
    path: str
    body: dict[str, Any]
    tags: str = ""


def _chat(
    team: str, model: str, text: str, *, stream: bool = False, usage: bool = False, tags: str = ""
) -> Call:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return Call(team, "/v1/chat/completions", body, tags)


def _embed(team: str, texts: list[str], tags: str = "") -> Call:
    return Call(team, "/v1/embeddings", {"model": "text-embedding-3-small", "input": texts}, tags)


TRAFFIC: Final[tuple[Call, ...]] = (
    _chat(
        "search",
        "gpt-4o-mini",
        "Rewrite the query 'cheap flights lisbon may' for search.",
        tags="feature=query-rewrite",
    ),
    _chat(
        "search",
        "gpt-4o-mini",
        "Rewrite the query 'python asyncio timeout' for search.",
        tags="feature=query-rewrite",
    ),
    _chat(
        "search",
        "gpt-4o-mini",
        "Summarise these five results for a snippet.",
        stream=True,
        tags="feature=snippets",
    ),
    _embed(
        "search",
        ["cheap flights lisbon may", "python asyncio timeout", "how to fold a fitted sheet"],
        tags="feature=index",
    ),
    _embed("search", ["a fourth document to index"], tags="feature=index"),
    _chat(
        "support",
        "gpt-4o",
        "A customer writes: my invoice shows two charges for November. "
        "Draft a polite reply that explains the refund process.",
        tags="feature=drafts",
    ),
    _chat(
        "support",
        "gpt-4o",
        "Classify this ticket: 'cannot log in after password reset'.",
        tags="feature=triage",
    ),
    _chat(
        "support",
        "gpt-4o",
        "Draft a reply about shipping delays to Madeira.",
        stream=True,
        usage=True,
        tags="feature=drafts",
    ),
    _embed(
        "support", ["refund policy", "password reset", "shipping delays"], tags="feature=kb-search"
    ),
    _chat(
        "research",
        "gpt-4o",
        "Summarise the attached paper on retrieval-augmented generation "
        "in three bullet points for the weekly digest.",
        tags="feature=digest",
    ),
    _chat(
        "research",
        "gpt-4o-mini",
        "List five follow-up questions about the paper.",
        stream=True,
        tags="feature=digest",
    ),
    _chat(OUTSIDER, "gpt-4o-mini", "hello from a script nobody registered"),
)


@dataclass
class DemoResult:
    url: str
    calls: int
    report: str
    records: list[dict[str, Any]] = field(default_factory=list)


def demo_settings(directory: Path, upstream_url: str, host: str, port: int) -> Settings:
    return Settings.model_validate(
        {
            "listen": {"host": host, "port": port},
            "upstream": {"url": upstream_url},
            "database": {"url": f"sqlite:///{directory / 'openai-meter-demo.db'}"},
            "ledger": {"spool_dir": str(directory / "spool"), "flush_interval_ms": 50},
            "teams": {team: {"keys": [key_fingerprint(demo_key(team))]} for team in TEAMS},
            "logging": {"level": "warning", "format": "text"},
            "server": {"shutdown_grace_s": 5},
        }
    )


async def send_traffic(base_url: str, traffic: tuple[Call, ...] = TRAFFIC) -> int:
    """Send every call (a few at a time) as an SDK would; returns how many succeeded."""
    async with ClientSession() as http:

        async def one(call: Call) -> bool:
            headers = {"Authorization": f"Bearer {demo_key(call.team)}"}
            if call.tags:
                headers["X-Meter-Tags"] = call.tags
            async with http.post(base_url + call.path, json=call.body, headers=headers) as r:
                await r.read()
                if r.headers.get(SIMULATOR_HEADER) != "1":
                    raise RuntimeError("the demo reached something that is not its simulator")
                return r.status == 200

        results = await asyncio.gather(*(one(call) for call in traffic))
    return sum(results)


async def _wait_for_rows(
    app: web.Application, expected: int, since: datetime, deadline_s: float = 30.0
) -> None:
    """Until ``expected`` calls started at or after ``since`` are in the ledger. Only this run's:
    a ``--dir`` reused from an earlier run already holds that run's rows."""
    engine = app[LEDGER_KEY].engine
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while len(await fetch_records(engine, limit=expected + 1, since=since)) < expected:
        if loop.time() > give_up:
            raise RuntimeError(f"the ledger did not get all {expected} records in {deadline_s} s")
        await asyncio.sleep(0.05)


async def _start_simulator() -> tuple[web.AppRunner, str]:
    """The simulator on a free loopback port (never anything but loopback)."""
    sockets = bind("127.0.0.1", 0)
    runner = web.AppRunner(Simulator().app, access_log=None)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{bound_port(sockets)}"


async def run_demo(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    out: TextIO = sys.stdout,
    wait: Callable[[], Awaitable[None]] | None = None,
    keep_ledger: bool = True,
) -> DemoResult:
    """The whole demo; ``wait`` (e.g. "until Ctrl-C") keeps the proxy up after the report."""
    sockets = bind(host, port)
    simulator, upstream_url = await _start_simulator()
    try:
        settings = demo_settings(directory, upstream_url, host, bound_port(sockets))
        url = f"http://{host}:{bound_port(sockets)}"
        app = create_app(settings)
        stop = asyncio.Event()
        started = asyncio.Event()
        server = asyncio.create_task(
            serve(
                app,
                sockets,
                stop=stop,
                shutdown_timeout=settings.server.shutdown_grace_s,
                header_timeout_s=settings.server.header_timeout_s,
                idle_timeout_s=settings.server.idle_timeout_s,
                on_started=started.set,
                **SERVER_KWARGS,
            )
        )
        try:
            await _until(started, server)
            # Every call's started_at is stamped after this (same clock), rows of an earlier run
            # in the same --dir before it: the window holds this run's calls and nothing else.
            begin = datetime.now(UTC)
            ok = await send_traffic(url)
            await _wait_for_rows(app, len(TRAFFIC), since=begin)
            window = Window(begin, datetime.now(UTC) + timedelta(seconds=1))
            report = await load_report(app[LEDGER_KEY].engine, window, ("team", "model"))
            table = to_table(report)
            records = await fetch_records(
                app[LEDGER_KEY].engine, limit=len(TRAFFIC), since=window.since, until=window.until
            )
            out.write(
                f"Sent {ok} of {len(TRAFFIC)} calls through the proxy at {url}/v1 "
                f"(upstream: the SIMULATOR at {upstream_url}).\n\n"
            )
            out.write(table)
            out.write(_after(url, directory, waiting=wait is not None, kept=keep_ledger))
            out.flush()
            if wait is not None:
                await wait()
        finally:
            stop.set()
            await server
    finally:
        await simulator.cleanup()
        for sock in sockets:
            sock.close()
    return DemoResult(url=url, calls=ok, report=table, records=records)


async def _until(started: asyncio.Event, server: asyncio.Task[None]) -> None:
    """Wait for the proxy to be up; if it fails to start, raise its error."""
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({waiter, server}, return_when=asyncio.FIRST_COMPLETED)
    if server in done:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        await server  # raises the start-up error
        raise RuntimeError("the proxy stopped during start-up")


def _after(url: str, directory: Path, *, waiting: bool, kept: bool) -> str:
    ledger = directory / "openai-meter-demo.db"
    lines = [
        "",
        f"Spend page:  {url}/meter/",
        f"Spend JSON:  curl '{url}/meter/spend?by=team,model'",
        f"Records:     curl '{url}/meter/records?limit=5&tag=feature=drafts'",
    ]
    if kept:
        lines.append(f"Ledger:      openai-meter report --database-url sqlite:///{ledger}")
    if waiting:
        lines += [
            f"Try a call:  OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={demo_key('search')} "
            "python your_script.py",
            "The upstream is SIMULATED: answers are canned and nothing reaches OpenAI. "
            "Ctrl-C stops the demo.",
        ]
    return "\n".join(lines) + "\n"
