"""Budget alerts: what is sent when, once per team and period (claimed in the database), delivered
to a real local webhook receiver with retries, and never a webhook URL in a log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import ConfigError, load_settings
from proxy.settings import Settings, WebhookSettings
from proxy.teams.budgets import BudgetTracker, Limit
from proxy.teams.notify import (
    Alert,
    BudgetNotifier,
    NotifyConfigError,
    Webhook,
    backoff_s,
    classify,
    redact_url,
    render,
    retryable,
    webhooks_from_settings,
)
from storage.budget_notifications import NotificationKey, Numbers, SqlNotificationStore
from storage.engine import create_engine
from storage.migrate import upgrade
from tests.support.budget_fakes import FakeClock, FakeLedger
from tests.support.webhook_receiver import WebhookReceiver

NOW = datetime(2026, 11, 17, 12, 0, tzinfo=UTC)
DAY = datetime(2026, 11, 17, tzinfo=UTC)
SECRET = "T0SECRET/B0SECRET/xoxb-very-secret-token"


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as hook:
        yield hook


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@dataclass
class Replica:
    tracker: BudgetTracker
    notifier: BudgetNotifier
    registry: CollectorRegistry

    def spend(self, amount: str, team: str = "search") -> None:
        self.tracker.record(team, self.tracker_now(), Decimal(amount))

    def tracker_now(self) -> datetime:
        return self.tracker._clock()

    def counter(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def replica(
    engine: AsyncEngine,
    clock: FakeClock,
    *webhooks: Webhook,
    limit: str = "1.00",
    warn: int = 80,
    queue_size: int = 1024,
    start: bool = True,
    **options: Any,
) -> AsyncIterator[Replica]:
    """A budget tracker with the notifier on its on_state seam, as create_app wires them."""
    registry = CollectorRegistry()
    notifier = BudgetNotifier(
        webhooks,
        SqlNotificationStore(engine),
        clock=clock,
        actions={"search": "block"},
        registry=registry,
        queue_size=queue_size,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        **options,
    )
    tracker = BudgetTracker(
        [Limit("search", "daily", Decimal(limit), "block", Decimal(warn))],
        FakeLedger(),
        clock=clock,
        on_state=notifier.on_state,
    )
    if start:
        await notifier.start()
    try:
        await tracker.refresh()
        yield Replica(tracker, notifier, registry)
    finally:
        await notifier.close(grace_s=0)


def hook(receiver: WebhookReceiver, **kwargs: Any) -> Webhook:
    return Webhook(url=receiver.url_for(f"/services/{SECRET}"), **kwargs)


async def settled(*replicas: Replica) -> None:
    for r in replicas:
        assert await r.notifier.wait_idle(15.0)


# ---------------------------------------------------------------- the events


async def test_warn_exceeded_and_reset_are_each_sent_once(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    async with replica(sqlite_engine, clock, hook(receiver)) as r:
        r.spend("0.50")
        await settled(r)
        assert receiver.deliveries == []  # 50 % < 80 %
        r.spend("0.30")  # 0.80: the warning, exactly at warn_at_percent
        await settled(r)
        assert receiver.events() == ["warn"]
        r.spend("0.05")
        await r.tracker.refresh()
        await settled(r)
        assert receiver.events() == ["warn"]  # still warn: nothing new
        r.spend("0.15")  # 1.00: reached
        r.spend("0.15")
        await r.tracker.refresh()
        await settled(r)
        assert receiver.events() == ["warn", "exceeded"]
        clock.advance(days=1)
        await r.tracker.refresh()  # the new period: the budget resets
        await r.tracker.refresh()
        r.spend("0.01")
        await settled(r)
        assert receiver.events() == ["warn", "exceeded", "reset"]

    warn, exceeded, reset = (d.json() for d in receiver.accepted)
    assert warn["spent_usd"] == "0.8" and warn["limit_usd"] == "1"
    assert warn["percent_used"] == "80.0" and warn["warn_at_percent"] == "80"
    assert warn["period_start"] == "2026-11-17T00:00:00Z"
    assert warn["period_end"] == "2026-11-18T00:00:00Z"
    assert exceeded["spent_usd"] == "1" and exceeded["action"] == "block"  # at the crossing
    assert "refused" in exceeded["text"]
    assert reset["period_start"] == "2026-11-18T00:00:00Z"
    assert reset["previous_period_start"] == "2026-11-17T00:00:00Z"
    assert len({warn["id"], exceeded["id"], reset["id"]}) == 3
    for delivery in receiver.accepted:
        assert delivery.headers["Idempotency-Key"] == delivery.json()["id"]
        assert delivery.headers["Content-Type"] == "application/json"
    rows = await SqlNotificationStore(sqlite_engine).rows()
    assert [(row["event"], row["state"]) for row in rows] == [
        ("warn", "delivered"),
        ("exceeded", "delivered"),
        ("reset", "delivered"),
    ]


async def test_straight_to_exceeded_sends_no_warn_now_or_later_from_any_replica(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    async with (
        replica(sqlite_engine, clock, hook(receiver)) as a,
        replica(sqlite_engine, clock, hook(receiver)) as b,
    ):
        a.spend("5")
        await settled(a)
        b.spend("0.9")  # b has not seen a's spend yet: it thinks the team is at warn level
        await settled(b)
    assert receiver.events() == ["exceeded"]
    rows = await SqlNotificationStore(sqlite_engine).rows()
    assert {(row["event"], row["state"]) for row in rows} == {
        ("exceeded", "delivered"),
        ("warn", "implied"),
    }


async def test_no_reset_when_the_previous_period_had_no_alert(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    async with replica(sqlite_engine, clock, hook(receiver)) as r:
        r.spend("0.10")
        clock.advance(days=1)
        await r.tracker.refresh()
        r.spend("0.10")
        await settled(r)
    assert receiver.deliveries == []


async def test_reset_is_known_to_a_replica_started_after_the_alert(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    async with replica(sqlite_engine, clock, hook(receiver)) as a:
        a.spend("0.9")
        await settled(a)
    assert receiver.events() == ["warn"]
    clock.advance(days=1)
    # Two replicas start in the new period (the first one is gone): one reset between them.
    async with (
        replica(sqlite_engine, clock, hook(receiver)) as b,
        replica(sqlite_engine, clock, hook(receiver)) as c,
    ):
        await settled(b, c)
    assert receiver.events() == ["warn", "reset"]


async def test_webhook_events_filter_and_several_webhooks(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    only_exceeded = Webhook(url=receiver.url_for("/exceeded-only"), events=frozenset({"exceeded"}))
    everything = Webhook(url=receiver.url_for("/all"))
    async with replica(sqlite_engine, clock, only_exceeded, everything) as r:
        r.spend("0.85")
        await settled(r)
        r.spend("0.5")
        await settled(r)
    seen = sorted((d.path, d.json()["event"]) for d in receiver.accepted)
    assert seen == [("/all", "exceeded"), ("/all", "warn"), ("/exceeded-only", "exceeded")]


async def test_reset_only_webhook_still_learns_of_resets(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    """Warn/exceeded are claimed (recorded) even when no webhook wants them: resets depend on it."""
    resets = Webhook(url=receiver.url_for("/resets"), events=frozenset({"reset"}))
    async with replica(sqlite_engine, clock, resets) as r:
        r.spend("2")
        await settled(r)
        assert receiver.deliveries == []
        clock.advance(days=1)
        await r.tracker.refresh()
        await settled(r)
    assert receiver.events() == ["reset"]


async def test_the_tracker_reports_each_state_with_the_period_it_belongs_to(
    clock: FakeClock,
) -> None:
    """The seam in budgets.py (keep it when budgets.py changes): on_state wherever the gauges are
    set -- every finished call of a budgeted team and every refresh -- with the period's start."""
    seen: list[tuple[Any, ...]] = []
    ledger = FakeLedger()
    tracker = BudgetTracker(
        [
            Limit("search", "daily", Decimal("1"), "block", Decimal(80)),
            Limit("search", "monthly", Decimal("20"), "alert", Decimal(50)),
        ],
        ledger,
        clock=clock,
        on_state=lambda *state: seen.append(state),
    )
    await tracker.refresh()
    tracker.record("search", NOW, Decimal("0.9"))
    ledger.add("search", NOW, "0.9")  # as the ledger writer would
    tracker.record("ads", NOW, Decimal("5"))  # no budget: no state
    clock.advance(hours=12)  # 2026-11-18 00:00 UTC: a new day, same month
    await tracker.refresh()
    month = datetime(2026, 11, 1, tzinfo=UTC)
    nextday = datetime(2026, 11, 18, tzinfo=UTC)
    d, m = Decimal(1), Decimal(20)
    assert seen == [
        ("search", "daily", DAY, Decimal(0), d, Decimal(80)),
        ("search", "monthly", month, Decimal(0), m, Decimal(50)),
        ("search", "daily", DAY, Decimal("0.9"), d, Decimal(80)),
        ("search", "monthly", month, Decimal("0.9"), m, Decimal(50)),
        ("search", "daily", nextday, Decimal(0), d, Decimal(80)),
        ("search", "monthly", month, Decimal("0.9"), m, Decimal(50)),
    ]


# ---------------------------------------------------------------- delivery


async def test_receiver_failing_then_refusing_then_recovering_gets_it_exactly_once(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    receiver.fail_with(500, 503)
    webhook = hook(receiver, max_attempts=1000)
    async with replica(sqlite_engine, clock, webhook) as r:
        r.spend("0.9")
        await receiver.wait_for(2)  # two 5xx answers...
        await receiver.stop()  # ...then nobody listens: connection refused
        for _ in range(1500):  # until the refused attempt happened (a 15 s deadline)
            if r.counter("openai_meter_budget_notification_retries_total") >= 3:
                break
            await r.notifier.wait_idle(0.01)
        assert r.counter("openai_meter_budget_notification_retries_total") >= 3
        await receiver.start()  # recovered, same port
        await settled(r)
        assert r.counter("openai_meter_budget_notifications_total", event="warn") == 1
        assert r.counter("openai_meter_budget_notification_failures_total", event="warn") == 0
    assert [d.status for d in receiver.deliveries] == [500, 503, 200]
    assert receiver.events() == ["warn"]
    keys = {d.headers["Idempotency-Key"] for d in receiver.deliveries}
    assert len(keys) == 1  # every attempt carries the same idempotency key


async def test_a_refusing_receiver_is_not_retried_and_the_failure_is_recorded(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    receiver.fail_with(404)  # e.g. Slack's answer for a deleted webhook
    async with replica(sqlite_engine, clock, hook(receiver)) as r:
        r.spend("0.9")
        await settled(r)
        assert r.counter("openai_meter_budget_notification_failures_total", event="warn") == 1
        assert r.counter("openai_meter_budget_notification_retries_total") == 0
    assert [d.status for d in receiver.deliveries] == [404]
    rows = await SqlNotificationStore(sqlite_engine).rows()
    assert [(row["event"], row["state"]) for row in rows] == [("warn", "failed")]


async def test_retries_are_bounded(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    receiver.fail_with(*[500] * 10)
    async with replica(sqlite_engine, clock, hook(receiver, max_attempts=4)) as r:
        r.spend("0.9")
        await settled(r)
        assert r.counter("openai_meter_budget_notification_retries_total") == 3
        assert r.counter("openai_meter_budget_notification_failures_total", event="warn") == 1
    assert [d.status for d in receiver.deliveries] == [500] * 4


async def test_slack_format_is_a_text_object(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    async with replica(sqlite_engine, clock, hook(receiver, format="slack")) as r:
        r.spend("1.5")
        await settled(r)
    (delivery,) = receiver.accepted
    body = delivery.json()
    assert list(body) == ["text"]
    assert isinstance(body["text"], str)
    assert "Budget exceeded" in body["text"] and "'search'" in body["text"]
    assert "$1.5 of its daily budget of $1 (150.0%)" in body["text"]


async def test_a_database_outage_delays_the_claim_and_the_next_update_retries_it(
    tmp_path: Path, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")  # no table yet
    try:
        async with replica(engine, clock, hook(receiver)) as r:
            r.spend("0.9")
            await settled(r)
            assert receiver.deliveries == []  # the claim failed: nothing sent, nothing lost
            await upgrade(engine)  # the database is back
            r.spend("0.01")
            await settled(r)
        assert receiver.events() == ["warn"]
    finally:
        await engine.dispose()


async def test_a_full_queue_drops_the_oldest_counts_it_and_requeues_it_later(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    registry = CollectorRegistry()
    notifier = BudgetNotifier(
        [hook(receiver, events=frozenset({"warn", "exceeded"}))],
        SqlNotificationStore(sqlite_engine),
        clock=clock,
        registry=registry,
        queue_size=2,
        backoff_base_s=0.01,
    )
    limit, warn = Decimal(10), Decimal(5)
    for team in ("a", "b", "c"):  # not started: the queue fills; on_state never waits for it
        notifier.on_state(team, "daily", DAY, Decimal(6), limit, warn)
    assert registry.get_sample_value("openai_meter_budget_notifications_dropped_total") == 1
    notifier.on_state("a", "daily", DAY, Decimal(7), limit, warn)  # "a" was dropped: again
    assert registry.get_sample_value("openai_meter_budget_notifications_dropped_total") == 2
    await notifier.start()
    try:
        assert await notifier.wait_idle(15.0)  # c and a
        notifier.on_state("b", "daily", DAY, Decimal(7), limit, warn)  # "b" was dropped: again
        notifier.on_state("c", "daily", DAY, Decimal(8), limit, warn)  # "c" was sent: not again
        assert await notifier.wait_idle(15.0)
    finally:
        await notifier.close(0)
    assert sorted(d.json()["team"] for d in receiver.accepted) == ["a", "b", "c"]


async def test_states_for_unknown_periods_or_an_older_period_are_ignored(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    notifier = BudgetNotifier([hook(receiver)], SqlNotificationStore(sqlite_engine), clock=clock)
    notifier.on_state("a", "weekly", DAY, Decimal(9), Decimal(1), Decimal(80))
    notifier.on_state("a", "daily", DAY, Decimal(0), Decimal(1), Decimal(80))  # reset check
    notifier.on_state("a", "daily", DAY - timedelta(days=1), Decimal(9), Decimal(1), Decimal(80))
    assert len(notifier._queue) == 1  # only the new period's reset check


async def _dead_replicas_claim(engine: AsyncEngine, minutes_ago: float) -> None:
    """A warn some replica claimed and never finished (killed mid-delivery)."""
    then = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    store = SqlNotificationStore(engine, clock=lambda: then)
    numbers = Numbers(Decimal("0.85"), Decimal("1.00"), Decimal("80"))
    assert await store.claim(NotificationKey("search", "daily", DAY, "warn"), numbers=numbers)


async def test_an_alert_whose_claimer_died_is_resent_once_by_the_survivors(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    await _dead_replicas_claim(sqlite_engine, minutes_ago=10)
    options = {"sweep_interval_s": 3600.0, "stale_after_s": 300.0}
    async with (
        replica(sqlite_engine, clock, hook(receiver), **options) as a,
        replica(sqlite_engine, clock, hook(receiver), **options) as b,
    ):
        await asyncio.gather(a.notifier._sweep(), b.notifier._sweep(), a.notifier._sweep())
        await settled(a, b)
        await asyncio.gather(a.notifier._sweep(), b.notifier._sweep())  # delivered: not again
        await settled(a, b)
    assert receiver.events() == ["warn"]
    body = receiver.accepted[0].json()
    assert body["spent_usd"] == "0.85" and body["limit_usd"] == "1"  # the claimed numbers
    rows = await SqlNotificationStore(sqlite_engine).rows()
    assert [(r["event"], r["state"]) for r in rows] == [("warn", "delivered")]


async def test_a_recent_claim_is_left_to_its_claimer_and_the_sweep_runs_on_its_own(
    sqlite_engine: AsyncEngine, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    await _dead_replicas_claim(sqlite_engine, minutes_ago=1)
    async with replica(
        sqlite_engine, clock, hook(receiver), sweep_interval_s=0.02, stale_after_s=300.0
    ) as r:
        await r.notifier._sweep()
        await settled(r)
        assert receiver.deliveries == []  # 1 minute old: its claimer may still be retrying
    async with replica(
        sqlite_engine, clock, hook(receiver), sweep_interval_s=0.02, stale_after_s=30.0
    ):
        await receiver.wait_for(1)  # the worker's own periodic sweep found it
    assert receiver.events() == ["warn"]


def test_the_stale_threshold_covers_the_longest_delivery() -> None:
    from proxy.teams.notify import STALE_MARGIN_S, delivery_bound_s

    default = Webhook(url="https://example.com/x")  # 8 attempts x 10 s, back-off 1..60 s
    assert delivery_bound_s([default], 1.0, 60.0) == 1 + 2 + 4 + 8 + 16 + 32 + 60 + 8 * 10
    slow = Webhook(url="https://example.com/y", max_attempts=2, timeout_s=300)
    assert delivery_bound_s([default, slow], 1.0, 60.0) == 1 + 2 * 300
    notifier = BudgetNotifier([default], SqlNotificationStore.__new__(SqlNotificationStore))
    assert notifier._stale_after_s == 203 + STALE_MARGIN_S


# ---------------------------------------------------------------- secrets never logged


async def test_the_webhook_url_never_reaches_a_log(
    sqlite_engine: AsyncEngine,
    receiver: WebhookReceiver,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.fail_with(500, 400)
    url = receiver.url_for(f"/services/{SECRET}?token={SECRET}")
    password = SECRET.replace("/", "")
    refused = Webhook(url=f"http://user:{password}@127.0.0.1:1/{SECRET}", max_attempts=2)
    async with replica(sqlite_engine, clock, Webhook(url=url), refused) as r:
        r.spend("0.9")
        await settled(r)
        r.spend("1")
        await settled(r)
    text = "\n".join(
        f"{rec.getMessage()} {rec.args!r} {rec.exc_text or ''} {rec.exc_info!r}"
        for rec in caplog.records
    )
    assert "127.0.0.1" in text  # the logs do say where (scheme + host)...
    assert SECRET not in text and password not in text  # ...never the path, query or password
    assert "budget alert NOT delivered" in text and "budget alert sent" in text
    assert SECRET not in repr(Webhook(url=url))


def test_settings_hold_the_url_as_a_secret_and_errors_do_not_echo_it() -> None:
    url = f"https://hooks.slack.com/services/{SECRET}"
    settings = Settings.model_validate({"budgets": {"notify": [{"url": url}]}})
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    with pytest.raises(ValidationError) as both:
        WebhookSettings.model_validate({"url": url, "url_env": "X"})
    assert "exactly one of url or url_env" in str(both.value)
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({})
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": url, "format": "xml"})
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": url, "events": []})
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": url, "events": ["spent"]})


def test_webhooks_from_the_environment_and_config_errors_never_echo_the_url(
    tmp_path: Path,
) -> None:
    env = {"OPENAI_METER_BUDGETS__NOTIFY": '[{"url_env": "HOOK", "format": "slack"}]'}
    settings = load_settings(environ=env)
    (only,) = settings.budgets.notify
    assert only.url_env == "HOOK" and only.format == "slack" and only.url is None
    url = f"https://hooks.slack.com/services/{SECRET}"
    for bad in (
        f'[{{"url": "{url}", "url_env": "HOOK"}}]',
        f'[{{"url": "{url}", "format": "xml"}}]',
        f'[{{"url": "{url}", "timeout_s": 0}}]',
        f'[{{"url": "{url}", "extra": 1}}]',
    ):
        with pytest.raises(ConfigError) as info:
            load_settings(environ={"OPENAI_METER_BUDGETS__NOTIFY": bad})
        assert "budgets.notify.0" in str(info.value) and SECRET not in str(info.value)
    config = tmp_path / "config.yaml"
    config.write_text(f"budgets:\n  notify:\n    - url: {url}\n      max_attempts: 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=str(config), environ={})
    assert "budgets.notify.0.max_attempts" in str(info.value) and SECRET not in str(info.value)


def test_url_from_the_environment_and_bad_urls_named_without_the_secret() -> None:
    url = f"https://hooks.slack.com/services/{SECRET}"
    items = [WebhookSettings(url_env="SLACK_HOOK", format="slack")]
    (webhook,) = webhooks_from_settings(items, {"SLACK_HOOK": f"  {url}\n"})
    assert webhook.url == url and webhook.format == "slack" and webhook.proxy is None
    with pytest.raises(NotifyConfigError, match=r"budgets.notify\[0\].url_env.*SLACK_HOOK"):
        webhooks_from_settings(items, {})
    with pytest.raises(NotifyConfigError, match=r"budgets.notify\[0\].url_env"):
        webhooks_from_settings(items, {"SLACK_HOOK": "   "})
    for bad in (f"ftp://host/{SECRET}", f"/{SECRET}", f"http:///{SECRET}", f"{SECRET}"):
        with pytest.raises(NotifyConfigError) as info:
            webhooks_from_settings(items, {"SLACK_HOOK": bad})
        assert SECRET not in str(info.value)


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=st.from_regex(r"[a-w][a-z0-9]{0,20}(\.[a-z]{2,5}){0,2}", fullmatch=True),
    secret=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789_", min_size=8, max_size=40),
)
def test_redacted_url_is_scheme_and_host_only(scheme: str, host: str, secret: str) -> None:
    for url in (
        f"{scheme}://{host}/{secret}",
        f"{scheme}://{host}:8443/x?token={secret}",
        f"{scheme}://u:{secret}@{host}/",
        f"{scheme}://{host}/#{secret}",
    ):
        redacted = redact_url(url)
        assert redacted == f"{scheme}://{host}"
        assert secret not in redacted


@pytest.mark.parametrize("junk", ["", "not a url", "http://[::1", "//", "\x00\xff", "a" * 100_000])
def test_redacting_junk_never_echoes_it(junk: str) -> None:
    redacted = redact_url(junk)
    assert junk not in redacted or junk == ""


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("spent", "limit", "warn", "expected"),
    [
        ("0", "10", "80", None),
        ("7.9999999999", "10", "80", None),
        ("8", "10", "80", "warn"),
        ("9.9999999999", "10", "80", "warn"),
        ("10", "10", "80", "exceeded"),
        ("1E+9", "10", "80", "exceeded"),
        ("0", "0", "80", "exceeded"),  # a zero budget is exhausted from the start (block refuses)
        ("0", "10", "0", "warn"),
        ("9.99", "10", "100", None),  # warn at 100 % = exceeded only
    ],
)
def test_classify_uses_the_budget_thresholds(
    spent: str, limit: str, warn: str, expected: str | None
) -> None:
    assert classify(Decimal(spent), Decimal(limit), Decimal(warn)) == expected


def _alert(event: str, team: str = "search", **kwargs: Any) -> Alert:
    values: dict[str, Any] = {
        "key": NotificationKey(team, "monthly", datetime(2026, 11, 1, tzinfo=UTC), event),
        "spent": Decimal("160.0000000001"),
        "limit": Decimal("200"),
        "warn_at_percent": Decimal("80"),
        "period_end": datetime(2026, 12, 1, tzinfo=UTC),
        "at": NOW,
        "action": "alert",
    }
    values.update(kwargs)
    return Alert(**values)


def test_json_body_keeps_money_exact_as_strings() -> None:
    body = orjson.loads(render(_alert("warn"), "json"))
    assert body["spent_usd"] == "160.0000000001"
    assert body["limit_usd"] == "200"
    assert body["percent_used"] == "80.0"
    assert body["event"] == "warn" and body["period"] == "monthly"
    assert body["at"] == "2026-11-17T12:00:00Z"
    assert body["previous_period_start"] is None
    assert set(body) == {
        "id",
        "event",
        "team",
        "period",
        "period_start",
        "period_end",
        "previous_period_start",
        "spent_usd",
        "limit_usd",
        "warn_at_percent",
        "percent_used",
        "action",
        "at",
        "text",
    }
    big = orjson.loads(render(_alert("exceeded", spent=Decimal("1E+12")), "json"))
    assert big["spent_usd"] == "1000000000000"  # never exponent notation
    zero = orjson.loads(render(_alert("exceeded", limit=Decimal(0)), "json"))
    assert zero["percent_used"] is None


@given(team=st.text(max_size=300), event=st.sampled_from(["warn", "exceeded", "reset"]))
def test_any_team_name_renders_to_valid_bodies(team: str, event: str) -> None:
    alert = _alert(event, team=team)
    slack = orjson.loads(render(alert, "slack"))
    assert list(slack) == ["text"]
    assert "<" not in slack["text"] and ">" not in slack["text"]  # Slack's mrkdwn escapes
    assert orjson.loads(render(alert, "json"))["team"] == team.encode("utf-8", "replace").decode()
    assert len(alert.id) == 32


def test_slack_text_escapes_markup_in_team_names() -> None:
    text = orjson.loads(render(_alert("warn", team="<!channel> & co"), "slack"))["text"]
    assert "&lt;!channel&gt; &amp; co" in text


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    retry_after=st.one_of(st.none(), st.text(max_size=20), st.floats().map(str)),
)
def test_backoff_is_bounded_and_never_negative(attempt: int, retry_after: str | None) -> None:
    delay = backoff_s(attempt, 1.0, 60.0, retry_after)
    assert 0 <= delay <= 60.0


def test_backoff_doubles_from_the_base() -> None:
    assert [backoff_s(a, 1.0, 60.0) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(1, 1.0, 60.0, "7") == 7
    assert backoff_s(1, 1.0, 60.0, "86400") == 60
    assert backoff_s(3, 1.0, 60.0, "Wed, 21 Oct 2015 07:28:00 GMT") == 4  # date form: ours


@pytest.mark.parametrize(
    ("status", "again"),
    [(500, True), (502, True), (429, True), (408, True), (400, False), (404, False), (410, False)],
)
def test_which_statuses_are_retried(status: int, again: bool) -> None:
    assert retryable(status) is again


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield
