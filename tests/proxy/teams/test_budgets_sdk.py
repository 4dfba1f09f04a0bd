"""A block budget through the real proxy with the official openai SDK as the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import openai
import pytest

from proxy.settings import BudgetSettings, TeamSettings
from proxy.teams.attribution import AttributionStage, TeamDirectory, key_fingerprint
from proxy.teams.budgets import BudgetStage, BudgetTracker, limits_from_settings
from proxy.usage.sinks import MemorySink
from tests.support.budget_fakes import FakeClock, FakeLedger, metered_hooks
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ProxyServer, settings_for

SEARCH_KEY = "sk-search-budget-test"
ADS_KEY = "sk-ads-budget-test"
MESSAGES = [{"role": "user", "content": "hi"}]
# The fake upstream reports 12 input + 5 output tokens: 0.000032 USD per call at the fake prices.
PER_CALL = Decimal("0.000032")


@pytest.fixture
def clock() -> FakeClock:
    # Starts at the real time: records carry the exchange's real started_at.
    return FakeClock(datetime.now(UTC))


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, clock: FakeClock) -> AsyncIterator[ProxyServer]:
    teams = {
        "search": TeamSettings(
            keys=[key_fingerprint(SEARCH_KEY)],
            budget=BudgetSettings(daily_usd=PER_CALL * 2, action="block"),
        ),
        "ads": TeamSettings(keys=[key_fingerprint(ADS_KEY)]),
    }
    tracker = BudgetTracker(limits_from_settings(teams), FakeLedger(), clock=clock)
    await tracker.refresh()
    hooks = metered_hooks(
        [AttributionStage(TeamDirectory.from_settings(teams)), BudgetStage(tracker)], MemorySink()
    )
    settings = settings_for(fake_upstream.url, teams={k: v.model_dump() for k, v in teams.items()})
    async with ProxyServer(settings, hooks=hooks) as server:
        yield server


def client(proxy: ProxyServer, key: str) -> openai.AsyncOpenAI:
    # Default retries (2): the SDK would retry a plain 429 twice.
    return openai.AsyncOpenAI(api_key=key, base_url=proxy.base_url)


async def test_sdk_gets_rate_limit_error_after_one_attempt_then_next_day_works(
    proxy: ProxyServer, fake_upstream: FakeUpstream, clock: FakeClock
) -> None:
    search = client(proxy, SEARCH_KEY)
    ads = client(proxy, ADS_KEY)
    try:
        for _ in range(2):  # 0.000032, then 0.000064 = the limit
            await search.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        upstream_calls = len(fake_upstream.requests)

        with pytest.raises(openai.RateLimitError) as info:
            await search.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
        error = info.value
        assert error.status_code == 429
        assert error.code == "budget_exceeded"
        assert error.type == "insufficient_quota"
        assert error.response.headers["x-should-retry"] == "false"
        # ONE attempt: the SDK keeps the last attempt's request; a retry would carry count 1 or 2.
        # It honoured x-should-retry: false, and nothing reached the upstream.
        assert error.response.request.headers.get("x-stainless-retry-count") == "0"
        assert len(fake_upstream.requests) == upstream_calls

        # Another team is unaffected.
        await ads.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        clock.advance(days=1)  # the next UTC day
        reply = await search.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.usage is not None
    finally:
        await search.close()
        await ads.close()
