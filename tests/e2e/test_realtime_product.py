"""Realtime over WebSocket through the whole product (``create_app``), with the official SDK.

One WebSocket session is one forwarded call: one ledger record, written when the session ends, with
the SUM of every ``response.done`` usage, priced from the published rates written down here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from websockets.exceptions import InvalidStatus

from proxy.teams.attribution import key_fingerprint
from tests.support.budget_fakes import FakeClock
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, share_encodings
from tests.support.usage_data import REALTIME_REFERENCE_USAGE

M = Decimal(1_000_000)
# gpt-realtime, standard, USD per 1M tokens (API reference §6.5: official compare page for text,
# [3P] for audio): text in 4.00 / cached 0.40 / out 16.00; audio in 32.00 / cached 0.40 / out 64.00.
RT_TEXT_IN, RT_CACHED, RT_TEXT_OUT = Decimal("4.00"), Decimal("0.40"), Decimal("16.00")
RT_AUDIO_IN, RT_AUDIO_CACHED, RT_AUDIO_OUT = Decimal("32.00"), Decimal("0.40"), Decimal("64.00")

TURN_1: dict[str, Any] = REALTIME_REFERENCE_USAGE  # the reference notes' §3.8 example
TURN_2: dict[str, Any] = {  # the second turn re-bills the first as (partly cached) input
    "total_tokens": 1021,
    "input_tokens": 777,
    "output_tokens": 244,
    "input_token_details": {
        "text_tokens": 301,
        "audio_tokens": 476,
        "image_tokens": 0,
        "cached_tokens": 320,
        "cached_tokens_details": {"text_tokens": 128, "audio_tokens": 192, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 57, "audio_tokens": 187},
}


def turn_cost(usage: dict[str, Any]) -> Decimal:
    details = usage["input_token_details"]
    cached = details["cached_tokens_details"]
    out = usage["output_token_details"]
    text_in = details["text_tokens"] - cached["text_tokens"]
    audio_in = details["audio_tokens"] - cached["audio_tokens"]
    return (
        text_in * RT_TEXT_IN
        + cached["text_tokens"] * RT_CACHED
        + audio_in * RT_AUDIO_IN
        + cached["audio_tokens"] * RT_AUDIO_CACHED
        + out["text_tokens"] * RT_TEXT_OUT
        + out["audio_tokens"] * RT_AUDIO_OUT
    ) / M


@pytest.fixture(autouse=True)
def _fast_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


async def _two_turns(client: openai.AsyncOpenAI) -> list[str]:
    """Two ``response.create`` turns with the SDK's realtime client; the event types it saw."""
    seen: list[str] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        for _ in range(2):
            await connection.response.create()
            async for event in connection:
                seen.append(event.type)
                if event.type == "response.done":
                    break
    return seen


async def test_two_responses_make_one_record_with_the_summed_usage_and_exact_cost(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.realtime_usages = [TURN_1, TURN_2]
    fake_upstream.realtime_model = "gpt-realtime-2025-08-28"
    async with Product(fake_upstream.url, tmp_path) as product:
        seen = await _two_turns(product.sdk("sk-test-realtime"))
        rows = await product.wait_rows(1)
    assert seen.count("response.done") == 2
    assert seen.count("response.output_audio.delta") == 2 * fake_upstream.realtime_audio_deltas
    assert len(rows) == 1
    row = rows[0]
    assert (row["endpoint"], row["method"], row["path"]) == ("realtime", "GET", "/v1/realtime")
    assert (row["status_code"], row["outcome"], row["stream"]) == (101, "ok", True)
    assert row["model_requested"] == "gpt-realtime"
    assert row["model"] == "gpt-realtime-2025-08-28"
    assert row["response_id"] == "resp_rt_1"  # the first finished response
    assert row["input_tokens"] == 132 + 777
    assert row["cached_input_tokens"] == 64 + 320
    assert row["audio_input_tokens"] == 13 + 476
    assert row["output_tokens"] == 121 + 244
    assert row["audio_output_tokens"] == 91 + 187
    assert row["units"] == {"cached_audio_input_tokens": Decimal(192)}
    assert row["usage_source"] == "reported"
    assert row["key_fingerprint"] == key_fingerprint("sk-test-realtime")
    assert row["cost_usd"] == turn_cost(TURN_1) + turn_cost(TURN_2)
    assert row["price_ref"].startswith("gpt-realtime@")


async def test_a_session_the_client_drops_mid_response_keeps_the_finished_responses(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.realtime_usages = [TURN_1]
    async with Product(fake_upstream.url, tmp_path) as product:
        url = product.url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": "Bearer sk-test-realtime"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers=headers) as ws,
        ):
            await ws.send_json({"type": "response.create"})
            while (await ws.receive_json())["type"] != "response.done":
                pass
            # Second turn: leave after its first audio delta, before its response.done.
            fake_upstream.hold = asyncio.Event()
            await ws.send_json({"type": "response.create"})
            while (await ws.receive_json())["type"] != "response.output_audio.delta":
                pass
        rows = await product.wait_rows(1)
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == "gpt-realtime"  # from ?model= (the fake's session names no model)
    assert row["response_id"] == "resp_rt_1"
    assert (row["input_tokens"], row["output_tokens"]) == (132, 121)
    assert row["usage_source"] == "reported"
    assert row["cost_usd"] == turn_cost(TURN_1)


async def test_a_session_with_no_response_is_one_record_with_no_usage(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with Product(fake_upstream.url, tmp_path) as product:
        client = product.sdk("sk-test-realtime")
        async with client.realtime.connect(model="gpt-realtime") as connection:
            event = await connection.recv()
            assert event.type == "session.created"
        rows = await product.wait_rows(1)
        await asyncio.sleep(0.1)
        rows = await product.rows()
    assert len(rows) == 1
    assert rows[0]["usage_source"] == "none"
    assert rows[0]["cost_usd"] == 0
    assert rows[0]["model"] == "gpt-realtime"


async def test_a_budget_blocked_team_cannot_open_a_session(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.realtime_usages = [TURN_1]
    key = "sk-test-voice-team"
    limit = turn_cost(TURN_1)  # one turn spends the whole daily budget
    teams = {"voice": {"keys": [key_fingerprint(key)], "budget": {"daily_usd": str(limit)}}}
    clock = FakeClock(datetime.now(UTC))
    async with Product(fake_upstream.url, tmp_path, clock=clock, teams=teams) as product:
        client = product.sdk(key)
        async with client.realtime.connect(model="gpt-realtime") as connection:
            await connection.response.create()
            async for event in connection:
                if event.type == "response.done":
                    break
        await product.wait_rows(1)
        upgrades = sum(1 for r in fake_upstream.requests if r.path == "/v1/realtime")
        # The SDK's realtime client sees the refusal as a failed handshake.
        with pytest.raises(InvalidStatus) as info:
            async with client.realtime.connect(model="gpt-realtime") as connection:
                await connection.recv()
        assert info.value.response.status_code == 429
        # A plain client sees the proxy's OpenAI-shaped 429 before any upgrade.
        url = product.url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                url,
                headers={
                    "Authorization": f"Bearer {key}",
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            ) as response,
        ):
            assert response.status == 429
            body = await response.json()
        assert body["error"]["code"] == "budget_exceeded"
        assert sum(1 for r in fake_upstream.requests if r.path == "/v1/realtime") == upgrades
        rows = await product.rows()
    sessions = [r for r in rows if r["status_code"] == 101]
    assert len(sessions) == 1
    assert sessions[0]["team"] == "voice"
    assert sessions[0]["cost_usd"] == limit
