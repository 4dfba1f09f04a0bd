"""Virtual keys: storage, cache (swap / unknown / revoke), CLI, and the proxy end to end."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.commands import keys as keys_command
from proxy.settings import TeamSettings
from proxy.teams.attribution import AttributionStage, TeamDirectory, key_fingerprint
from proxy.teams.virtual_keys import (
    PREFIX,
    VirtualKeyCache,
    VirtualKeyError,
    key_hash,
    new_key,
    new_key_id,
)
from proxy.usage.sinks import MemorySink
from storage.virtual_keys import (
    VirtualKeyRow,
    active_teams_by_hash,
    insert_key,
    list_keys,
    revoke_key,
)
from tests.support.budget_fakes import metered_hooks
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ProxyServer, settings_for
from tests.support.spend_ledger import migrated_engine

REAL_KEY = "sk-proj-REAL-upstream-key-never-shown-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await migrated_engine(tmp_path / "ledger.db")
    yield engine
    await engine.dispose()


async def issue(engine: AsyncEngine, team: str) -> tuple[str, VirtualKeyRow]:
    key = new_key()
    row = VirtualKeyRow(
        id=new_key_id(),
        key_hash=key_hash(key),
        fingerprint=key_fingerprint(key),
        team=team,
        description=None,
        created_at=datetime.now(UTC),
    )
    await insert_key(engine, row)
    return key, row


def test_keys_are_prefixed_and_random() -> None:
    a, b = new_key(), new_key()
    assert a.startswith(PREFIX) and b.startswith(PREFIX) and a != b
    assert len(a) >= len(PREFIX) + 43  # 256 bits, url-safe base64


async def test_store_keeps_only_hashes(engine: AsyncEngine, tmp_path: Path) -> None:
    key, row = await issue(engine, "search")
    assert await active_teams_by_hash(engine) == {key_hash(key): (row.id, "search")}
    assert [r.id for r in await list_keys(engine)] == [row.id]
    assert await revoke_key(engine, row.id, datetime.now(UTC))
    assert not await revoke_key(engine, row.id, datetime.now(UTC))  # already revoked
    assert not await revoke_key(engine, "vk_unknown", datetime.now(UTC))
    assert await active_teams_by_hash(engine) == {}
    assert (await list_keys(engine))[0].revoked_at is not None
    assert await list_keys(engine, include_revoked=False) == []
    await engine.dispose()
    files = await asyncio.to_thread(lambda: [p.read_bytes() for p in tmp_path.iterdir()])
    assert files and all(key.encode() not in data for data in files)


class CountingLoader:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.loads = 0

    async def __call__(self) -> dict[str, tuple[str, str]]:
        self.loads += 1
        return await active_teams_by_hash(self.engine)


async def test_cache_swaps_refuses_unknown_and_revoked(engine: AsyncEngine) -> None:
    loader = CountingLoader(engine)
    cache = VirtualKeyCache(loader, REAL_KEY, miss_reload_s=0.0)
    await cache.load()
    key, row = await issue(engine, "search")  # created after start: found by the miss re-load
    assert await cache.resolve(key) == ("search", f"Bearer {REAL_KEY}")
    assert await cache.resolve(new_key()) is None
    await revoke_key(engine, row.id, datetime.now(UTC))
    await cache.load()  # what run() does every refresh_interval_s
    assert await cache.resolve(key) is None
    assert REAL_KEY not in repr(cache)


async def test_a_flood_of_bad_keys_costs_at_most_one_reload_per_interval(
    engine: AsyncEngine,
) -> None:
    loader = CountingLoader(engine)
    cache = VirtualKeyCache(loader, REAL_KEY, miss_reload_s=60.0)
    await cache.load()
    results = await asyncio.gather(*(cache.resolve(new_key()) for _ in range(200)))
    assert results == [None] * 200
    assert loader.loads == 2  # the start-up load, then one re-load for the whole flood
    await asyncio.gather(*(cache.resolve(new_key()) for _ in range(200)))
    assert loader.loads == 2


async def test_a_key_created_just_after_a_periodic_refresh_works_at_once(
    engine: AsyncEngine,
) -> None:
    """The miss re-load has its own clock: a refresh a moment ago does not delay a new key
    until the next refresh (the fleet test found a new key refused for up to a second)."""
    loader = CountingLoader(engine)
    cache = VirtualKeyCache(loader, REAL_KEY, miss_reload_s=60.0)
    await cache.load()  # what run() does every refresh_interval_s
    key, _ = await issue(engine, "search")
    assert await cache.resolve(key) == ("search", f"Bearer {REAL_KEY}")


async def test_revocation_takes_effect_within_the_refresh_interval(engine: AsyncEngine) -> None:
    cache = VirtualKeyCache(CountingLoader(engine), REAL_KEY, refresh_interval_s=0.05)
    key, row = await issue(engine, "search")
    await cache.load()
    task = asyncio.create_task(cache.run())
    try:
        assert await cache.resolve(key) is not None
        await revoke_key(engine, row.id, datetime.now(UTC))
        for _ in range(100):
            if await cache.resolve(key) is None:
                break
            await asyncio.sleep(0.02)
        assert await cache.resolve(key) is None
    finally:
        task.cancel()


def test_enabled_without_a_real_key_is_a_config_error() -> None:
    async def loader() -> dict[str, tuple[str, str]]:
        return {}

    with pytest.raises(VirtualKeyError, match=r"upstream\.api_key"):
        VirtualKeyCache(loader, None)


# ---------------------------------------------------------------- CLI


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    keys_command.register(parser.add_subparsers())
    return parser.parse_args(["keys", *argv])


def test_fingerprint_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(REAL_KEY + "\n"))
    args = parse("fingerprint")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out == key_fingerprint(REAL_KEY) + "\n"
    assert REAL_KEY not in out


def test_fingerprint_without_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    args = parse("fingerprint")
    assert args.func(args) == 2


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    args = parse("create", "--team", "search", "--description", "ci", "--database-url", url)
    assert args.func(args) == 0
    created = dict(
        line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line
    )
    key, key_id = created["key"].strip(), created["id"].strip()
    assert key.startswith(PREFIX)

    args = parse("list", "--format", "json", "--database-url", url)
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and key_fingerprint(key) in listing and key not in listing

    args = parse("revoke", key_id, "--database-url", url)
    assert args.func(args) == 0
    assert args.func(args) == 1  # already revoked
    capsys.readouterr()
    args = parse("list", "--active", "--database-url", url)
    assert args.func(args) == 0
    assert key_id not in capsys.readouterr().out


# ---------------------------------------------------------------- through the proxy


async def test_proxy_swaps_keys_and_the_real_key_never_leaks(
    engine: AsyncEngine,
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key, _ = await issue(engine, "search")
    revoked_key, revoked_row = await issue(engine, "search")
    await revoke_key(engine, revoked_row.id, datetime.now(UTC))
    cache = VirtualKeyCache(lambda: active_teams_by_hash(engine), REAL_KEY)
    await cache.load()
    sink = MemorySink()
    teams = TeamDirectory.from_settings({"search": TeamSettings()})
    hooks = metered_hooks([AttributionStage(teams, cache)], sink)
    settings = settings_for(
        fake_upstream.url, upstream={"api_key": REAL_KEY}, virtual_keys={"enabled": True}
    )
    async with ProxyServer(settings, hooks=hooks) as proxy:
        client = openai.AsyncOpenAI(api_key=key, base_url=proxy.base_url, max_retries=0)
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
            assert fake_upstream.requests[-1].headers["Authorization"] == f"Bearer {REAL_KEY}"
            assert REAL_KEY not in raw.content.decode()
            assert REAL_KEY not in str(raw.headers)

            sent = len(fake_upstream.requests)
            for bad in (revoked_key, new_key()):
                bad_client = openai.AsyncOpenAI(api_key=bad, base_url=proxy.base_url, max_retries=0)
                with pytest.raises(openai.AuthenticationError) as info:
                    await bad_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                await bad_client.close()
                assert info.value.code == "invalid_api_key"
                assert REAL_KEY not in info.value.response.text
                assert bad not in info.value.response.text
            assert len(fake_upstream.requests) == sent  # refused keys never reach upstream
        finally:
            await client.close()
        await hooks.drain()
    records = [r for r in sink.records if r.status_code == 200]
    assert records and records[0].team == "search"
    assert records[0].key_fingerprint == key_fingerprint(key)
    for record in sink.records:
        assert REAL_KEY not in repr(record) and key not in repr(record)
    assert REAL_KEY not in caplog.text and key not in caplog.text


async def test_plain_keys_pass_through_untouched_when_enabled(
    engine: AsyncEngine, fake_upstream: FakeUpstream
) -> None:
    cache = VirtualKeyCache(lambda: active_teams_by_hash(engine), REAL_KEY)
    await cache.load()
    hooks = metered_hooks([AttributionStage(TeamDirectory.from_settings({}), cache)], MemorySink())
    async with ProxyServer(settings_for(fake_upstream.url), hooks=hooks) as proxy:
        client = openai.AsyncOpenAI(api_key="sk-own-key", base_url=proxy.base_url, max_retries=0)
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        finally:
            await client.close()
    assert fake_upstream.requests[-1].headers["Authorization"] == "Bearer sk-own-key"
