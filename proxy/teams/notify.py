"""Budget alerts to people: webhooks (generic JSON or Slack-compatible) on warn, exceeded and reset.

``budgets.notify`` lists the webhooks. :class:`BudgetNotifier` is fed by the budget tracker's
``on_state(team, period, period_start, spent, limit, warn_at_percent)`` callback, which runs on the
request path whenever a team's spend changes (and on every refresh). There it only compares numbers
and, at most once per (team, period, period start, event) in this process, appends a job to a
bounded queue: O(1), no I/O, never raises. A full queue drops its *oldest* job (counted in
``openai_meter_budget_notifications_dropped_total``) and forgets it, so the next state update can
enqueue it again.

One background task takes jobs off the queue and *claims* each alert in the database
(:mod:`storage.budget_notifications`: insert-if-absent on the key) so that, across all replicas on
one database, exactly one sends it. The claimer then delivers to every webhook that wants the event,
each in its own task, retrying connection errors, timeouts, 408/425/429 and 5xx with bounded
exponential back-off (``Retry-After`` honoured up to the cap), and giving up after ``max_attempts``.
Delivery is at-least-once per webhook: a receiver that got the body but whose answer was lost gets it
again; the ``Idempotency-Key`` header (also ``id`` in the JSON body) lets it drop the repeat. Once a
minute the worker also *sweeps*: an alert still ``claimed`` long after any delivery could have ended
(its claimer died or stopped mid-delivery) is taken over by one replica (compare-and-set) and sent.

Events:

* ``warn``: spent reached ``warn_at_percent`` of the limit (not sent when the same period went
  straight to ``exceeded``: that claim marks the warn ``implied``);
* ``exceeded``: spent reached the limit (what ``action: block`` refuses at);
* ``reset``: a new period started and the previous one had a warn or exceeded alert (decided by the
  database, so a replica started after the alert still knows).

Webhook URLs often carry secrets (Slack's do): they are never logged, only ``scheme://host``
(:func:`redact_url`); exceptions are logged by type name, never by message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal, Protocol
from zoneinfo import ZoneInfo

import orjson
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from proxy.http.forward import egress_proxy_for
from proxy.settings import NOTIFY_EVENTS, NotifyEvent, WebhookSettings
from proxy.teams.budgets import PERIODS, Period, period_bounds
from storage.budget_notifications import NotificationKey, Numbers, StaleClaim, State

log = logging.getLogger("openai_meter.budgets.notify")

Clock = Callable[[], datetime]
Format = Literal["json", "slack"]
EVENTS: Final[tuple[NotifyEvent, ...]] = NOTIFY_EVENTS
DEFAULT_QUEUE_SIZE: Final = 1024
MAX_CONCURRENT_DELIVERIES: Final = 32
BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 60.0
SWEEP_INTERVAL_S: Final = 60.0
STALE_MARGIN_S: Final = 60.0
_ONE_TENTH: Final = Decimal("0.1")


class NotifyConfigError(ValueError):
    """A webhook that cannot be used; the message names the entry, never the URL's secret part."""


# ---------------------------------------------------------------- webhooks


def redact_url(url: str) -> str:
    """``scheme://host`` of ``url`` -- what logs and errors may show of a webhook URL."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "(unparseable url)"
    if not parsed.scheme or not parsed.host:
        return "(unparseable url)"
    return f"{parsed.scheme}://{parsed.host}"


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str = field(repr=False)  # a secret: repr() and logs show only `target`
    format: Format = "json"
    events: frozenset[str] = frozenset(EVENTS)
    timeout_s: float = 10.0
    max_attempts: int = 8
    proxy: URL | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return redact_url(self.url)


def webhooks_from_settings(
    items: Sequence[WebhookSettings], environ: Mapping[str, str]
) -> list[Webhook]:
    """The configured webhooks with their URLs resolved (``url`` or the ``url_env`` variable)."""
    webhooks: list[Webhook] = []
    for index, item in enumerate(items):
        where = f"budgets.notify[{index}]"
        if item.url is not None:
            url = item.url.get_secret_value().strip()
        else:
            name = item.url_env or ""
            url = environ.get(name, "").strip()
            if not url:
                raise NotifyConfigError(f"{where}.url_env: environment variable {name} is not set")
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise NotifyConfigError(
                f"{where}: the webhook url must be http(s)://host/... (got {redact_url(url)})"
            )
        webhooks.append(
            Webhook(
                url=url,
                format=item.format,
                events=frozenset(item.events),
                timeout_s=item.timeout_s,
                max_attempts=item.max_attempts,
                proxy=egress_proxy_for(url),
            )
        )
    return webhooks


# ---------------------------------------------------------------- pure: what to send


def classify(spent: Decimal, limit: Decimal, warn_at_percent: Decimal) -> NotifyEvent | None:
    """The alert ``spent`` stands at (same thresholds as :func:`proxy.teams.budgets.check`)."""
    if spent >= limit:
        return "exceeded"
    if spent >= limit * warn_at_percent / 100:
        return "warn"
    return None


@dataclass(frozen=True, slots=True)
class Alert:
    key: NotificationKey
    spent: Decimal
    limit: Decimal
    warn_at_percent: Decimal
    period_end: datetime
    at: datetime
    action: str | None = None
    previous_start: datetime | None = None  # reset only

    @property
    def id(self) -> str:
        """Stable across replicas and retries: the receiver's idempotency key."""
        k = self.key
        raw = f"{k.team}\x00{k.period}\x00{_iso(k.period_start)}\x00{k.event}"
        return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    @property
    def percent_used(self) -> Decimal | None:
        if self.limit <= 0:
            return None
        return (self.spent * 100 / self.limit).quantize(_ONE_TENTH)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usd(amount: Decimal) -> str:
    """Exact and readable: ``8.1`` not ``8.1000000000``, never exponent notation."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn needs only these three escaped (https://api.slack.com/reference/surfaces/formatting).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message_text(alert: Alert) -> str:
    """One human sentence (or two) about the alert."""
    k = alert.key
    percent = alert.percent_used
    used = f" ({percent}%)" if percent is not None else ""
    budget = f"{k.period} budget of ${_usd(alert.limit)}"
    if k.event == "warn":
        return (
            f"Budget warning: team {k.team!r} has spent ${_usd(alert.spent)} of its {budget}{used}, "
            f"past the {_usd(alert.warn_at_percent)}% warning. The period resets at "
            f"{_iso(alert.period_end)}."
        )
    if k.event == "exceeded":
        then = (
            "calls are refused until then"
            if alert.action == "block"
            else "calls still go through (action: alert)"
            if alert.action == "alert"
            else "see its action"
        )
        return (
            f"Budget exceeded: team {k.team!r} has spent ${_usd(alert.spent)} of its {budget}{used}. "
            f"The period resets at {_iso(alert.period_end)}; {then}."
        )
    return (
        f"Budget reset: team {k.team!r} starts a new {k.period} period at "
        f"{_iso(k.period_start)} with its {budget} (the previous period had an alert)."
    )


def render(alert: Alert, fmt: Format) -> bytes:
    """The request body: ``slack`` = ``{"text": ...}``; ``json`` = every field, money as strings."""
    text = message_text(alert)
    if fmt == "slack":
        return orjson.dumps({"text": _slack_escape(text)})
    k = alert.key
    percent = alert.percent_used
    return orjson.dumps(
        {
            "id": alert.id,
            "event": k.event,
            "team": k.team.encode("utf-8", "replace").decode("utf-8"),  # lone surrogates
            "period": k.period,
            "period_start": _iso(k.period_start),
            "period_end": _iso(alert.period_end),
            "previous_period_start": (
                _iso(alert.previous_start) if alert.previous_start is not None else None
            ),
            "spent_usd": _usd(alert.spent),
            "limit_usd": _usd(alert.limit),
            "warn_at_percent": _usd(alert.warn_at_percent),
            "percent_used": str(percent) if percent is not None else None,
            "action": alert.action,
            "at": _iso(alert.at),
            "text": text,
        }
    )


def retryable(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


def backoff_s(attempt: int, base_s: float, cap_s: float, retry_after: str | None = None) -> float:
    """Delay before attempt ``attempt + 1``: ``base * 2^(attempt-1)``, or the server's
    ``Retry-After`` seconds when it gives them -- never more than ``cap_s``."""
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            seconds = float(retry_after.strip())
            if seconds == seconds and seconds >= 0:  # not NaN
                return min(cap_s, seconds)
    return min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))


# ---------------------------------------------------------------- the notifier


def delivery_bound_s(webhooks: Iterable[Webhook], base_s: float, cap_s: float) -> float:
    """The longest one alert's delivery can take: every attempt timing out, every back-off."""
    worst = 0.0
    for webhook in webhooks:
        waits = sum(backoff_s(a, base_s, cap_s) for a in range(1, webhook.max_attempts))
        worst = max(worst, waits + webhook.max_attempts * webhook.timeout_s)
    return worst


class NotificationStore(Protocol):
    async def claim(
        self, key: NotificationKey, *, numbers: Numbers | None = None, implies: Sequence[str] = ()
    ) -> bool: ...

    async def claim_reset(
        self, key: NotificationKey, previous_start: datetime, *, numbers: Numbers | None = None
    ) -> bool: ...

    async def finish(self, key: NotificationKey, state: State) -> None: ...

    async def stale_claims(self, older_than_s: float, limit: int = 100) -> list[StaleClaim]: ...

    async def reclaim(self, claim: StaleClaim) -> bool: ...


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.sent = Counter(
            "openai_meter_budget_notifications",
            "Budget alerts delivered to a webhook (one per webhook), by event.",
            ("event",),
            registry=registry,
        )
        self.failed = Counter(
            "openai_meter_budget_notification_failures",
            "Budget alerts a webhook never accepted (refused, or retries exhausted), by event.",
            ("event",),
            registry=registry,
        )
        self.retries = Counter(
            "openai_meter_budget_notification_retries",
            "Webhook delivery attempts that failed and were retried after back-off.",
            registry=registry,
        )
        self.dropped = Counter(
            "openai_meter_budget_notifications_dropped",
            "Budget alert jobs dropped (oldest first) because the notification queue was full.",
            registry=registry,
        )
        for event in EVENTS:
            self.sent.labels(event)
            self.failed.labels(event)


@dataclass(frozen=True, slots=True)
class _Job:
    """What the request path queues: the numbers at the crossing (the rest is built later)."""

    key: NotificationKey
    spent: Decimal
    limit: Decimal
    warn_at_percent: Decimal
    at: datetime


@dataclass(slots=True)
class _Slot:
    """What this process already queued for one (team, period) in its current period."""

    start: datetime
    queued: set[str] = field(default_factory=set)


class BudgetNotifier:
    """Feed :meth:`on_state` from the budget tracker; ``await start()`` / ``await close()``."""

    def __init__(
        self,
        webhooks: Iterable[Webhook],
        store: NotificationStore,
        *,
        timezone: str = "UTC",
        clock: Clock | None = None,
        actions: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        stale_after_s: float | None = None,
    ) -> None:
        self._webhooks = tuple(webhooks)
        self._store = store
        self._tz = ZoneInfo(timezone)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._actions = dict(actions or {})
        self.metrics = NotifyMetrics(registry)
        self._queue: deque[_Job] = deque()
        self._queue_size = max(1, queue_size)
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._sweep_interval_s = sweep_interval_s
        # A claim older than the longest possible delivery (plus a margin) was abandoned.
        self._stale_after_s = (
            stale_after_s
            if stale_after_s is not None
            else delivery_bound_s(self._webhooks, backoff_base_s, backoff_cap_s) + STALE_MARGIN_S
        )
        self._wanted = frozenset(e for w in self._webhooks for e in w.events)
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._wakeup = asyncio.Event()
        self._busy = False
        self._deliveries: set[asyncio.Task[None]] = set()
        self._slots_free = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
        self._worker: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._claim_failing = False

    # -- request path: O(1), no I/O -------------------------------------------------------------

    def on_state(
        self,
        team: str,
        period: str,
        period_start: datetime,
        spent: Decimal,
        limit: Decimal,
        warn_at_percent: Decimal,
    ) -> None:
        """The tracker's view of one (team, period); queues what is due, at most once each."""
        if period not in PERIODS:
            return
        slot = self._slots.get((team, period))
        if slot is None or slot.start != period_start:
            if slot is not None and period_start < slot.start:
                return  # a late report about a period already left behind
            slot = _Slot(period_start)
            self._slots[(team, period)] = slot
        if "reset" in self._wanted and "reset" not in slot.queued:
            # A period new to this process: the claimer asks the database whether the previous
            # period had an alert (a reset is due) -- once per period per replica.
            slot.queued.add("reset")
            key = NotificationKey(team, period, period_start, "reset")
            self._enqueue(_Job(key, spent, limit, warn_at_percent, self._clock()))
        event = classify(spent, limit, warn_at_percent)
        if event is None or event in slot.queued:
            return
        slot.queued.add(event)
        if event == "exceeded":
            slot.queued.add("warn")  # moot now; the claim marks it implied for every replica
        key = NotificationKey(team, period, period_start, event)
        self._enqueue(_Job(key, spent, limit, warn_at_percent, self._clock()))

    def _enqueue(self, job: _Job) -> None:
        if len(self._queue) >= self._queue_size:
            oldest = self._queue.popleft()
            self.metrics.dropped.inc()
            self._forget(oldest)
        self._queue.append(job)
        self._wakeup.set()

    def _forget(self, job: _Job) -> None:
        """Let a later state update queue ``job``'s event again (it was dropped or unclaimed)."""
        k = job.key
        slot = self._slots.get((k.team, k.period))
        if slot is not None and slot.start == k.period_start:
            slot.queued.discard(k.event)

    # -- background: claim, then deliver --------------------------------------------------------

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._session = ClientSession(
            cookie_jar=DummyCookieJar(),
            trust_env=False,  # egress proxy resolved once per webhook (Webhook.proxy)
            skip_auto_headers=("User-Agent",),
        )
        self._worker = asyncio.create_task(self._run(), name="budget-notify")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self._sweep_interval_s
        failures = 0
        while True:
            if loop.time() >= next_sweep:
                await self._sweep()
                next_sweep = loop.time() + self._sweep_interval_s
                continue
            if not self._queue:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), next_sweep - loop.time())
                continue
            job = self._queue.popleft()
            self._busy = True
            # A delivery slot first: with every slot taken by stuck receivers, claims wait here
            # (the queue absorbs it) rather than claiming alerts nobody can send yet.
            await self._slots_free.acquire()
            try:
                alert = self._alert(job)
                claimed = await self._claim(alert)
            except asyncio.CancelledError:
                self._slots_free.release()
                raise
            except Exception as exc:
                self._slots_free.release()
                self._forget(job)
                failures += 1
                if not self._claim_failing:
                    log.warning(
                        "budget alert claim failed (%s); will retry on the next budget update",
                        type(exc).__name__,
                    )
                self._claim_failing = True
                self._busy = False
                await asyncio.sleep(backoff_s(failures, *self._backoff))
                continue
            if self._claim_failing:
                log.info("budget alert claims recovered")
            self._claim_failing = False
            failures = 0
            if claimed:
                self._spawn(alert)
            else:
                self._slots_free.release()
            self._busy = False

    def _spawn(self, alert: Alert) -> None:
        """Deliver ``alert`` in its own task (the caller holds a delivery slot for it)."""
        task = asyncio.create_task(self._deliver_all(alert), name="budget-notify-send")
        self._deliveries.add(task)
        task.add_done_callback(self._delivery_done)

    async def _sweep(self) -> None:
        """Re-send alerts whose claimer (any replica) never finished them: it died mid-delivery
        or stopped before its grace ran out. One replica wins each (compare-and-set)."""
        self._busy = True
        try:
            for claim in await self._store.stale_claims(self._stale_after_s):
                if claim.numbers is None:
                    await self._store.finish(claim.key, "failed")
                    continue
                await self._slots_free.acquire()
                try:
                    won = await self._store.reclaim(claim)
                except BaseException:
                    self._slots_free.release()
                    raise
                if not won:
                    self._slots_free.release()
                    continue
                k, n = claim.key, claim.numbers
                log.warning(
                    "re-sending a budget alert its claimer did not finish: event=%s team=%s period=%s",
                    k.event,
                    k.team,
                    k.period,
                )
                job = _Job(k, n.spent, n.limit, n.warn_at_percent, claim.claimed_at)
                self._spawn(self._alert(job))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("budget alert sweep failed (%s)", type(exc).__name__)
        finally:
            self._busy = False

    def _alert(self, job: _Job) -> Alert:
        """The whole alert (period bounds in the budgets' timezone), built off the request path."""
        k = job.key
        period: Period = "daily" if k.period == "daily" else "monthly"
        end = period_bounds(period, k.period_start, self._tz)[1]
        previous = period_bounds(period, k.period_start - timedelta(microseconds=1), self._tz)[0]
        return Alert(
            key=k,
            spent=job.spent,
            limit=job.limit,
            warn_at_percent=job.warn_at_percent,
            period_end=end,
            at=job.at,
            action=self._actions.get(k.team),
            previous_start=previous if k.event == "reset" else None,
        )

    async def _claim(self, alert: Alert) -> bool:
        k = alert.key
        numbers = Numbers(alert.spent, alert.limit, alert.warn_at_percent)
        if k.event == "reset":
            assert alert.previous_start is not None
            return await self._store.claim_reset(k, alert.previous_start, numbers=numbers)
        implies = ("warn",) if k.event == "exceeded" else ()
        return await self._store.claim(k, numbers=numbers, implies=implies)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots_free.release()

    async def _deliver_all(self, alert: Alert) -> None:
        targets = [w for w in self._webhooks if alert.key.event in w.events]
        results = await asyncio.gather(*(self._deliver(w, alert) for w in targets))
        state: State = "recorded" if not targets else "delivered" if all(results) else "failed"
        try:
            await self._store.finish(alert.key, state)
        except Exception as exc:
            log.warning("could not record budget alert outcome (%s)", type(exc).__name__)

    async def _deliver(self, webhook: Webhook, alert: Alert) -> bool:
        """POST until accepted, refused (4xx other than 408/425/429) or out of attempts."""
        session = self._session
        assert session is not None
        event = alert.key.event
        body = render(alert, webhook.format)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "openai-meter",
            "Idempotency-Key": alert.id,
        }
        timeout = ClientTimeout(total=webhook.timeout_s)
        problem = "no attempt"
        for attempt in range(1, webhook.max_attempts + 1):
            retry_after: str | None = None
            try:
                async with session.post(
                    webhook.url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    proxy=webhook.proxy,
                    allow_redirects=False,  # never carry the alert somewhere else
                ) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never log str(exc): aiohttp puts the URL in some messages
                problem = type(exc).__name__
            else:
                if 200 <= status < 300:
                    self.metrics.sent.labels(event).inc()
                    log.info(
                        "budget alert sent: event=%s team=%s period=%s to=%s attempts=%d",
                        event,
                        alert.key.team,
                        alert.key.period,
                        webhook.target,
                        attempt,
                    )
                    return True
                problem = f"HTTP {status}"
                if not retryable(status):
                    break
            if attempt == webhook.max_attempts:
                break
            self.metrics.retries.inc()
            if attempt == 1:
                log.warning(
                    "budget alert to %s failed (%s); retrying with back-off (up to %d attempts)",
                    webhook.target,
                    problem,
                    webhook.max_attempts,
                )
            await asyncio.sleep(backoff_s(attempt, *self._backoff, retry_after=retry_after))
        self.metrics.failed.labels(event).inc()
        log.error(
            "budget alert NOT delivered: event=%s team=%s period=%s to=%s last error: %s",
            event,
            alert.key.team,
            alert.key.period,
            webhook.target,
            problem,
        )
        return False

    # -- lifecycle ------------------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing queued, being claimed or being delivered."""
        return not self._queue and not self._busy and not self._deliveries

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until :meth:`idle` (polls); False when ``timeout_s`` passed first."""
        loop = asyncio.get_running_loop()
        end = None if timeout_s is None else loop.time() + timeout_s
        while not self.idle():
            if end is not None and loop.time() >= end:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self, grace_s: float = 5.0) -> None:
        """Give queued alerts and deliveries up to ``grace_s`` to finish, then stop."""
        if self._worker is not None and grace_s > 0:
            await self.wait_idle(grace_s)
        left = len(self._deliveries) + len(self._queue) + int(self._busy)
        tasks = [t for t in (self._worker, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if left:
            log.warning("stopping with %d budget alert(s) not yet delivered", left)
        self._worker = None
        if self._session is not None:
            await self._session.close()
            self._session = None
