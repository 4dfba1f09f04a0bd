"""The whole product (``create_app``): admin API behind its token, exact reports, secrets kept
secret, and budgets enforced against the SDK's retries."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from proxy.teams.attribution import key_fingerprint
from tests.support.budget_fakes import FakeClock
from tests.support.fake_upstream import FakeUpstream, FakeUsage
from tests.support.product import Product, share_encodings

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
TOKEN = "admin-" + "t0ken"
ADMIN_PATHS = ("/meter/spend", "/meter/records", "/meter/prices")


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


async def _traffic(product: Product, fake_upstream: FakeUpstream, keys: list[str]) -> int:
    """A mix of calls and usages (odd token counts give costs with many decimals)."""
    calls = 0
    for index, key in enumerate(keys):
        client = product.sdk(key)
        fake_upstream.usage = FakeUsage(
            input_tokens=1237 + 71 * index, cached_tokens=64 * index, output_tokens=311 + 13 * index
        )
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await client.embeddings.create(model="text-embedding-3-small", input="hi")
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        async for _ in stream:
            pass
        calls += 3
    return calls


# -- 8. admin token, and report totals exact ----------------------------------------------------


async def test_admin_endpoints_need_the_token_and_reports_add_up_exactly(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    teams = {
        "search": {"keys": [key_fingerprint("sk-test-search")]},
        "ads": {"keys": [key_fingerprint("sk-test-ads")]},
    }
    async with Product(fake_upstream.url, tmp_path, admin={"token": TOKEN}, teams=teams) as product:
        calls = await _traffic(
            product, fake_upstream, ["sk-test-search", "sk-test-ads", "sk-test-other"]
        )
        await product.wait_rows(calls)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for path in ADMIN_PATHS:
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    async with http.get(product.url + path, headers=headers) as r:
                        assert r.status == 401, path
                        error = (await r.json())["error"]
                        assert set(error) == {"message", "type", "param", "code"}
                async with http.get(product.url + path, headers=auth) as r:
                    assert r.status == 200, path
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(product.url + path) as r:
                    assert r.status == 200, path
            async with http.get(
                product.url + "/meter/spend",
                params={"by": "team,model", "since": "1d"},
                headers=auth,
            ) as r:
                report = await r.json()
            async with http.get(
                product.url + "/meter/records", params={"limit": "1000"}, headers=auth
            ) as r:
                records = (await r.json())["records"]
        # /v1/* needed no admin token: the SDK calls above went through with API keys only.
        assert len(records) == calls
        rows = report["rows"]
        assert {(row["team"], row["model"]) for row in rows} == {
            (team, model)
            for team in ("search", "ads", "unassigned")
            for model in ("gpt-4o-mini-2024-07-18", "text-embedding-3-small")
        }
        total = Decimal(report["total"]["cost_usd"])
        assert total > 0
        assert total == sum(Decimal(row["cost_usd"]) for row in rows)
        assert total == sum(Decimal(record["cost_usd"]) for record in records)
        assert report["total"]["requests"] == calls == sum(row["requests"] for row in rows)


# -- 9. raw keys never stored, exported or logged -----------------------------------------------


async def test_raw_api_key_never_stored_exported_or_logged(
    fake_upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "sk-test-" + secrets.token_hex(16)
    fingerprint = key_fingerprint(key)
    async with Product(fake_upstream.url, tmp_path, metrics={"key_labels": True}) as product:
        await _traffic(product, fake_upstream, [key])
        client = product.sdk(key)
        fake_upstream.fail(500)  # an upstream error is recorded (and maybe logged) too
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        fake_upstream.model = "gpt-unknown-9"  # unpriced: logged/counted
        await client.chat.completions.create(model="gpt-unknown-9", messages=MESSAGES)
        rows = await product.wait_rows(5)
        async with aiohttp.ClientSession() as http:
            async with http.get(product.url + "/metrics") as r:
                metrics = await r.text()
            async with http.get(product.url + "/meter/records") as r:
                records = await r.text()
    # The upstream did get the key: it is the caller's credential, forwarded unchanged.
    assert fake_upstream.requests[-1].headers["Authorization"] == f"Bearer {key}"
    rows = await product.rows()
    assert len(rows) == 5
    assert all(row["key_fingerprint"] == fingerprint for row in rows)
    assert key not in repr(rows)
    assert fingerprint in records and key not in records
    assert fingerprint in metrics and key not in metrics
    secret_part = key.removeprefix("sk-test-")
    assert caplog.records, "the proxy logs something during this traffic"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert secret_part not in text, record
    for spooled in (tmp_path / "spool").rglob("*"):
        if spooled.is_file():
            assert secret_part.encode() not in spooled.read_bytes()


# -- 11. budgets through create_app --------------------------------------------------------------

SEARCH_KEY = "sk-test-search-budget"
ADS_KEY = "sk-test-ads-budget"
# 12 input + 5 output tokens of gpt-4o-mini at 0.15 / 0.60 USD per 1M (seed 004) = 0.0000048.
PER_CALL = (12 * Decimal("0.15") + 5 * Decimal("0.60")) / 1_000_000


async def test_team_over_its_daily_budget_gets_rate_limit_error_after_one_attempt(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    clock = FakeClock(datetime.now(UTC))
    teams = {
        "search": {
            "keys": [key_fingerprint(SEARCH_KEY)],
            "budget": {"daily_usd": str(PER_CALL * 2), "action": "block"},
        },
        "ads": {"keys": [key_fingerprint(ADS_KEY)]},
    }
    async with Product(fake_upstream.url, tmp_path, clock=clock, teams=teams) as product:
        # The SDK's default retry policy (2 retries): a plain 429 would be tried 3 times.
        search = product.sdk(SEARCH_KEY, max_retries=openai.DEFAULT_MAX_RETRIES)
        ads = product.sdk(ADS_KEY, max_retries=openai.DEFAULT_MAX_RETRIES)
        for _ in range(2):  # spends exactly the limit
            await search.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        upstream_calls = len(fake_upstream.requests)
        with pytest.raises(openai.RateLimitError) as info:
            await search.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert info.value.code == "budget_exceeded"
        # ONE attempt: the request the SDK kept is its first (a retry carries count 1 or 2).
        assert info.value.response.request.headers.get("x-stainless-retry-count") == "0"
        assert len(fake_upstream.requests) == upstream_calls  # nothing reached the upstream
        # Another team is fine.
        reply = await ads.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.usage is not None
        clock.advance(days=1)  # the next UTC day: search may spend again
        await search.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    rows = await product.rows()
    assert sorted(r["team"] for r in rows if r["status_code"] == 200) == [
        "ads",
        "search",
        "search",
        "search",
    ]
    # The refusal is on the ledger too (status 429), with no spend.
    [refused] = [r for r in rows if r["status_code"] == 429]
    assert refused["team"] == "search" and refused["cost_usd"] == 0
    assert refused["outcome"] == "refused"
    assert sum(r["cost_usd"] for r in rows if r["team"] == "search") == 3 * PER_CALL
