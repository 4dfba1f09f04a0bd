"""Budget alerts through the whole product (``create_app``): three replicas on one PostgreSQL
crossing the threshold together send one message; a receiver that never answers does not hold up
a single call; the URL can come from the environment."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.app import NOTIFIER_KEY, StartupError, create_app
from proxy.teams.attribution import key_fingerprint
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, product_settings, share_encodings
from tests.support.webhook_receiver import WebhookReceiver

KEY = "sk-search-notify-test"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
SECRET_PATH = "/services/T0/B0/notify-secret-path"


@pytest.fixture(autouse=True)
def _shared_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as hook:
        yield hook


def sections(webhook: dict[str, Any], **budget: Any) -> dict[str, dict[str, Any]]:
    # Any priced call crosses 0.0001 % of $1 (the fake upstream's usage costs ~$0.0000048);
    # none reaches $1, so only "warn" is due.
    budget = {"daily_usd": "1", "warn_at_percent": "0.0001", "action": "alert", **budget}
    return {
        "teams": {"search": {"keys": [key_fingerprint(KEY)], "budget": budget}},
        "budgets": {"notify": [webhook]},
    }


@pytest.mark.postgres
async def test_three_replicas_crossing_together_send_one_message(
    fake_upstream: FakeUpstream,
    receiver: WebhookReceiver,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="openai_meter.budgets")
    products = [
        Product(
            fake_upstream.url,
            tmp_path / f"replica{n}",
            database={"url": postgres_url},
            **sections({"url": receiver.url_for(SECRET_PATH)}),
        )
        for n in range(3)
    ]
    for product in products:
        await product.start()
    try:
        clients = [p.sdk(KEY) for p in products]
        # One call per replica, together: each replica sees the team cross on its own record.
        await asyncio.gather(
            *(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES) for c in clients)
        )
        await receiver.wait_for(1)
        for product in products:
            assert await product.app[NOTIFIER_KEY].wait_idle(15.0)
    finally:
        for product in products:
            await product.stop()  # drains: anything still queued had its chance

    crossings = [r for r in caplog.records if r.getMessage().startswith("budget warning")]
    assert len(crossings) == 3  # every replica saw the crossing itself...
    assert receiver.events() == ["warn"]  # ...and one message went out
    assert len(receiver.deliveries) == 1
    rows = await products[0].rows()
    assert len(rows) == 3 and {r["team"] for r in rows} == {"search"}


async def test_a_receiver_that_never_answers_does_not_hold_up_calls(
    fake_upstream: FakeUpstream, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.block = True  # accepts the connection, reads the alert, never answers
    product = Product(
        fake_upstream.url,
        tmp_path,
        server={"shutdown_grace_s": 0.5},
        **sections({"url": receiver.url_for(SECRET_PATH), "timeout_s": 300}),
    )
    await product.start()
    try:
        client = product.sdk(KEY)
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await receiver.wait_for(1)  # the alert is stuck at the receiver from here on
        replies = [
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            for _ in range(10)
        ]
        assert all(r.usage is not None for r in replies)
        assert not product.app[NOTIFIER_KEY].idle()  # the delivery is indeed still waiting
    finally:
        await product.stop()  # the stuck delivery is cancelled after the grace, not awaited
    assert len(await product.rows()) == 11
    assert len(receiver.deliveries) == 1


async def test_the_url_from_an_environment_variable_and_slack_format(
    fake_upstream: FakeUpstream,
    receiver: WebhookReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_BUDGET_SLACK_HOOK", receiver.url_for(SECRET_PATH))
    async with Product(
        fake_upstream.url,
        tmp_path,
        **sections({"url_env": "TEST_BUDGET_SLACK_HOOK", "format": "slack"}),
    ) as product:
        await product.sdk(KEY).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        (delivery,) = await receiver.wait_for(1)
    assert delivery.path == SECRET_PATH
    body = delivery.json()
    assert list(body) == ["text"] and body["text"].startswith("Budget warning: team 'search'")
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert "budget alert sent" in logged and SECRET_PATH not in logged


def test_a_missing_url_variable_stops_start_up_naming_it(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_BUDGET_HOOK_UNSET", raising=False)
    settings = product_settings(
        fake_upstream.url, tmp_path, **sections({"url_env": "TEST_BUDGET_HOOK_UNSET"})
    )
    with pytest.raises(StartupError, match=r"budgets.notify\[0\].url_env.*TEST_BUDGET_HOOK_UNSET"):
        create_app(settings)
    bad = product_settings(
        fake_upstream.url, tmp_path, **sections({"url": "ftp://example.com/secret-part"})
    )
    with pytest.raises(StartupError) as info:
        create_app(bad)
    assert "secret-part" not in str(info.value) and "ftp://example.com" in str(info.value)
