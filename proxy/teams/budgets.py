"""Per-team budgets: daily / monthly USD limits that block (429) or alert.

Three layers:

* pure arithmetic -- :func:`period_bounds`, :func:`limits_from_settings`, :func:`check`;
* :class:`BudgetTracker` -- what a team has spent in the current period, with no I/O on the
  request path: ``ledger part`` (refreshed every ``refresh_interval_s`` by ONE query for all
  budgeted teams, for calls started before ``cut = refresh time - settle_s``) + ``local part``
  (records this process finished that the ledger value does not include) + ``in-flight
  reservations`` (calls admitted and not yet finished). With a :class:`SharedStore` (PostgreSQL,
  several replicas) the admission of a team with a ``block`` limit is one statement on a row
  shared by every replica instead; teams without a budget never touch it;
* :class:`BudgetStage` -- the :class:`proxy.http.exchange.RequestStage` that refuses or admits a call
  with a reservation worth the most the call can cost (a :data:`CostCeiling` built from the
  request itself, never from the team's history) and settles it to the real cost when the record
  arrives (refusals and errors settle too: every call ends in exactly one record).

A call belongs to the period its ``started_at`` falls in (as in the ledger and reports). See
``docs/budgets.md`` for the overshoot bound across concurrent calls and replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web

from proxy.http.errors import error_response
from proxy.http.exchange import Exchange
from proxy.settings import TeamSettings
from storage.budget_counters import Admission, Window
from storage.record import UsageRecord

log = logging.getLogger("openai_meter.budgets")

Period = Literal["daily", "monthly"]
Action = Literal["block", "alert"]
PERIODS: Final[tuple[Period, ...]] = ("daily", "monthly")
Clock = Callable[[], datetime]
# Ledger spend per team per window: (teams, {period: window start}, until) -> {team: {period: $}}
SpendSource = Callable[
    [Collection[str], Mapping[str, datetime], datetime],
    Awaitable[Mapping[str, Mapping[str, Decimal]]],
]
# Gauge callback, e.g. proxy.observe.metrics.Metrics.set_budget(team, period, spent, limit)
GaugeCallback = Callable[[str, str, Decimal, Decimal | None], None]
# State callback, e.g. proxy.teams.notify.BudgetNotifier.on_state(team, period, period_start,
# spent, limit, warn_at_percent): called wherever the gauges are, with the period it belongs to.
StateCallback = Callable[[str, str, datetime, Decimal, Decimal, Decimal], None]

# The most a call can cost, from its request alone (proxy.usage.ceiling.CostCeiling).
CostCeiling = Callable[[Exchange], Decimal]


class SharedStore(Protocol):
    """Reservations shared by every replica (``storage.budget_counters.SharedReservations``)."""

    async def reserve(
        self,
        team: str,
        call_id: str,
        amount: Decimal,
        windows: Mapping[str, Window],
        expires_at: datetime,
    ) -> Admission: ...

    async def settle(
        self, team: str, call_id: str, windows: Mapping[str, Window], cost: Decimal
    ) -> None: ...

    async def sweep(self, now: datetime) -> None: ...


_ZERO: Final = Decimal(0)
_EXTRAS_KEY: Final = "budgets.reservation"
_SETTLE_ATTEMPTS: Final = 3
_SHARED_RETRY_S: Final = 1.0  # while the shared store fails, try it again at most this often


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- pure arithmetic


def period_bounds(period: Period, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of the period containing ``now``, in ``tz``, returned as aware UTC."""
    local = now.astimezone(tz)
    if period == "daily":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=1, hours=12)).date()
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).date().replace(day=1)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    # Re-attach tz to wall-clock midnight so DST days are 23 h / 25 h long, as on the wall.
    start = datetime(start.year, start.month, start.day, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Limit:
    team: str
    period: Period
    amount: Decimal
    action: Action
    warn_at_percent: Decimal

    @property
    def warn_amount(self) -> Decimal:
        return self.amount * self.warn_at_percent / 100


def limits_from_settings(teams: Mapping[str, TeamSettings]) -> list[Limit]:
    limits: list[Limit] = []
    for team, settings in teams.items():
        budget = settings.budget
        if budget is None:
            continue
        for period, amount in (("daily", budget.daily_usd), ("monthly", budget.monthly_usd)):
            if amount is not None:
                limits.append(
                    Limit(team, period, amount, budget.action, budget.warn_at_percent)  # type: ignore[arg-type]
                )
    return limits


Verdict = Literal["ok", "warn", "reached"]


def check(limit: Limit, spent: Decimal) -> Verdict:
    """A team is refused once its spent amount for the period has reached its limit."""
    if spent >= limit.amount:
        return "reached"
    if spent >= limit.warn_amount:
        return "warn"
    return "ok"


# ---------------------------------------------------------------- tracker


@dataclass(slots=True)
class _Finished:
    team: str
    started_at: datetime
    cost: Decimal


@dataclass(slots=True)
class Reservation:
    """An admitted call's hold on its team's budget, worth the most the call can cost.

    ``shared``: the blocking periods' windows it holds in the shared store (empty when held only
    in this process's memory).
    """

    team: str
    amount: Decimal
    taken_monotonic: float
    call_id: str = ""
    shared: Mapping[str, Window] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: Limit
    spent: Decimal
    resets_at: datetime
    reserved: Decimal = _ZERO  # held by calls in flight (what brought spent to the limit)


class BudgetTracker:
    """Spent per (team, period) = ledger part + local part (+ in-flight reservations to admit).

    Not thread-safe; lives on the event loop like the rest of the app.
    """

    def __init__(
        self,
        limits: Iterable[Limit],
        spend_source: SpendSource,
        *,
        timezone: str = "UTC",
        clock: Clock = utc_now,
        refresh_interval_s: float = 1.0,
        settle_s: float = 2.0,
        max_reservation_age_s: float = 3600.0,
        on_gauge: GaugeCallback | None = None,
        on_state: StateCallback | None = None,
        shared: SharedStore | None = None,
    ) -> None:
        self._limits: dict[str, tuple[Limit, ...]] = {}
        for limit in limits:
            self._limits[limit.team] = (*self._limits.get(limit.team, ()), limit)
        self._periods: tuple[Period, ...] = tuple(
            p for p in PERIODS if any(lim.period == p for ls in self._limits.values() for lim in ls)
        )
        self._source = spend_source
        self._tz = ZoneInfo(timezone)
        self._clock = clock
        self.refresh_interval_s = refresh_interval_s
        self._settle = timedelta(seconds=settle_s)
        self._max_reservation_age_s = max_reservation_age_s
        self._on_gauge = on_gauge
        self._on_state = on_state
        # Ledger part: spend over [period start, cut) as of the last refresh.
        self._cut: datetime | None = None
        self._ledger: dict[tuple[str, Period], Decimal] = {}
        self._ledger_start: dict[str, datetime] = {}
        # Current periods and the local part per (team, period).
        self._bounds: dict[Period, tuple[datetime, datetime]] = {}
        self._local: dict[tuple[str, Period], Decimal] = {}
        self._finished: list[_Finished] = []
        # In-flight reservations.
        self._reserved: dict[str, Decimal] = {}
        self._reservations: dict[int, Reservation] = {}
        self._announced: set[tuple[str, Period, datetime, Verdict]] = set()
        self._refresh_failing = False
        # Shared reservations (several replicas on PostgreSQL): only teams with a block limit.
        self._shared = shared
        self._blocking = frozenset(
            team for team, ls in self._limits.items() if any(lim.action == "block" for lim in ls)
        )
        self._shared_failing = False
        self._shared_retry_at = 0.0
        self._settling: set[asyncio.Task[None]] = set()

    # -- queries --------------------------------------------------------------------------------

    def budgeted(self, team: str) -> bool:
        return team in self._limits

    @property
    def teams(self) -> tuple[str, ...]:
        return tuple(self._limits)

    def spent(self, team: str, period: Period) -> Decimal:
        """Ledger part + local part for the current period (no reservations)."""
        self._roll(self._clock())
        return self._spent(team, period)

    def _spent(self, team: str, period: Period) -> Decimal:
        start = self._bounds[period][0]
        ledger = _ZERO
        if self._cut is not None and self._ledger_start.get(period) == start:
            ledger = self._ledger.get((team, period), _ZERO)
        return ledger + self._local.get((team, period), _ZERO)

    def reserved(self, team: str) -> Decimal:
        return self._reserved.get(team, _ZERO)

    # -- admission ------------------------------------------------------------------------------

    def admit(self, team: str, amount: Decimal = _ZERO) -> Refusal | Reservation | None:
        """Refusal when a ``block`` limit is reached (counting in-flight reservations), else the
        call's reservation of ``amount`` (``None`` for teams without a budget). In memory only."""
        limits = self._limits.get(team)
        if limits is None:
            return None
        self._roll(self._clock())
        reserved = self._reserved.get(team, _ZERO)
        for limit in limits:
            spent = self._spent(team, limit.period)
            verdict = check(limit, spent + reserved)
            if verdict == "reached" and limit.action == "block":
                return Refusal(limit, spent, self._bounds[limit.period][1], reserved)
            if verdict != "ok":
                self._announce(limit, spent + reserved, verdict)
        return self._hold(Reservation(team, amount, time.monotonic()))

    async def reserve(
        self, team: str, amount: Decimal, call_id: str
    ) -> Refusal | Reservation | None:
        """:meth:`admit`, through the shared store when there is one and the team has a block
        limit (one statement); in memory when there is none or it fails (logged once per
        failing streak: calls are not refused because metering is unhealthy)."""
        if self._shared is None or team not in self._blocking:
            return self.admit(team, amount)
        if self._shared_failing and time.monotonic() < self._shared_retry_at:
            return self.admit(team, amount)  # store failing: one call per second tries it
        now = self._clock()
        self._roll(now)
        windows = self._windows(team)
        expires = now + timedelta(seconds=self._max_reservation_age_s)
        try:
            admission = await self._shared.reserve(team, call_id, amount, windows, expires)
        except Exception as exc:
            if not self._shared_failing:
                log.warning("shared budget reservation failed, admitting locally: %r", exc)
            self._shared_failing = True
            self._shared_retry_at = time.monotonic() + _SHARED_RETRY_S
            return self.admit(team, amount)
        if self._shared_failing:
            log.info("shared budget reservations recovered")
            self._shared_failing = False
        if not admission.admitted:
            for limit in self._limits[team]:
                row = admission.rows.get(limit.period)
                if limit.action == "block" and row is not None and not row.admitted:
                    self._announce(limit, row.spent + row.reserved, "reached")
                    return Refusal(limit, row.spent, self._bounds[limit.period][1], row.reserved)
            # Every row admitted but one was missing twice (a concurrent roll-over): be lenient.
        for limit in self._limits[team]:
            row = admission.rows.get(limit.period)
            if row is not None:
                verdict = check(limit, row.spent + row.reserved)
                if verdict != "ok":
                    self._announce(limit, row.spent + row.reserved, verdict)
        shared = windows if admission.admitted else {}
        return self._hold(Reservation(team, amount, time.monotonic(), call_id, shared))

    def settle(
        self,
        reservation: Reservation | None,
        team: str,
        cost: Decimal | None,
        started_at: datetime | None = None,
    ) -> None:
        """A call of ``team`` finished (its record arrived): release its reservation and, with a
        shared store, move it to the real cost there (in the background, retried). A call that
        held no shared reservation adds its cost to the periods ``started_at`` falls in."""
        if reservation is not None:
            self.release(reservation)
        if self._shared is None or team not in self._blocking:
            return
        amount = cost if cost is not None else _ZERO
        if reservation is not None and reservation.shared:
            windows, call_id = reservation.shared, reservation.call_id
        elif amount > 0:
            # Admitted in memory (store down) or before this process started: count its cost.
            at = started_at if started_at is not None else self._clock()
            windows, call_id = self._windows(team, at), ""
        else:
            return
        try:
            task = asyncio.get_running_loop().create_task(
                self._settle_shared(team, call_id, windows, amount)
            )
        except RuntimeError:  # no loop (shutdown): the reservation expires after max age
            return
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Wait for shared settlements still in flight (call at shutdown)."""
        while self._settling:
            await asyncio.gather(*tuple(self._settling), return_exceptions=True)

    async def _settle_shared(
        self, team: str, call_id: str, windows: Mapping[str, Window], cost: Decimal
    ) -> None:
        assert self._shared is not None
        for attempt in range(_SETTLE_ATTEMPTS):
            try:
                await self._shared.settle(team, call_id, windows, cost)
                return
            except Exception as exc:
                if attempt == _SETTLE_ATTEMPTS - 1:
                    # The reservation expires after max_reservation_age_s; the cost is in the
                    # ledger (and in this replica's local part) but not in the shared row.
                    log.warning("shared budget settle failed for team=%s: %r", team, exc)
                    return
                await asyncio.sleep(0.2 * 2**attempt)

    def _windows(self, team: str, at: datetime | None = None) -> dict[str, Window]:
        """The team's block periods: the current ones, or those containing ``at``."""
        return {
            limit.period: Window(
                *(
                    self._bounds[limit.period]
                    if at is None
                    else period_bounds(limit.period, at, self._tz)
                ),
                limit.amount,
            )
            for limit in self._limits[team]
            if limit.action == "block"
        }

    def _hold(self, reservation: Reservation) -> Reservation:
        self._reservations[id(reservation)] = reservation
        self._reserved[reservation.team] = self._reserved.get(reservation.team, _ZERO) + (
            reservation.amount
        )
        return reservation

    def release(self, reservation: Reservation) -> None:
        if self._reservations.pop(id(reservation), None) is None:
            return
        left = self._reserved.get(reservation.team, _ZERO) - reservation.amount
        self._reserved[reservation.team] = max(left, _ZERO)

    def record(self, team: str, started_at: datetime, cost: Decimal | None) -> None:
        """A finished call's cost joins the local part (unpriced calls count as 0)."""
        if team not in self._limits:
            return
        amount = cost if cost is not None else _ZERO
        self._roll(self._clock())
        self._finished.append(_Finished(team, started_at, amount))
        for period in self._periods:
            start, end = self._bounds[period]
            if start <= started_at < end:
                key = (team, period)
                self._local[key] = self._local.get(key, _ZERO) + amount
        self._publish(team)

    # -- refresh --------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """One ledger query for every budgeted team and period; raises on database errors."""
        if not self._limits:
            return
        now = self._clock()
        self._roll(now)
        cut = now - self._settle
        starts: dict[str, datetime] = {p: self._bounds[p][0] for p in self._periods}
        result = await self._source(self.teams, starts, cut)
        self._cut = cut
        self._ledger_start = dict(starts)
        self._ledger = {
            (team, period): Decimal(result.get(team, {}).get(period, _ZERO))
            for team in self._limits
            for period in self._periods
        }
        # Calls started before the cut are now the ledger's; keep only the newer ones locally.
        self._finished = [f for f in self._finished if f.started_at >= cut]
        self._recompute_local()
        self._expire_reservations()
        for team in self._limits:
            self._publish(team)

    async def run(self) -> None:
        """Refresh forever (cancel to stop). Errors are logged once per failing streak; the last
        known ledger values keep serving, plus everything finished locally since."""
        while True:
            try:
                await self.refresh()
                if self._shared is not None and self._blocking:
                    await self._shared.sweep(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._refresh_failing:
                    log.warning("budget refresh failed, using last known spend: %r", exc)
                self._refresh_failing = True
            else:
                if self._refresh_failing:
                    log.info("budget refresh recovered")
                self._refresh_failing = False
            await asyncio.sleep(self.refresh_interval_s)

    # -- internals ------------------------------------------------------------------------------

    def _roll(self, now: datetime) -> None:
        """Move to new periods when ``now`` left the current ones (budgets reset at boundaries)."""
        changed = False
        for period in self._periods:
            bounds = self._bounds.get(period)
            if bounds is None or not bounds[0] <= now < bounds[1]:
                self._bounds[period] = period_bounds(period, now, self._tz)
                changed = True
        if changed:
            self._recompute_local()

    def _recompute_local(self) -> None:
        local: dict[tuple[str, Period], Decimal] = {}
        for item in self._finished:
            for period in self._periods:
                start, end = self._bounds[period]
                if start <= item.started_at < end:
                    key = (item.team, period)
                    local[key] = local.get(key, _ZERO) + item.cost
        self._local = local

    def _expire_reservations(self) -> None:
        oldest = time.monotonic() - self._max_reservation_age_s
        for reservation in [r for r in self._reservations.values() if r.taken_monotonic < oldest]:
            self.release(reservation)

    def _publish(self, team: str) -> None:
        for limit in self._limits.get(team, ()):
            spent = self._spent(team, limit.period)
            verdict = check(limit, spent)
            if verdict != "ok":
                self._announce(limit, spent, verdict)
            if self._on_gauge is not None:
                with contextlib.suppress(Exception):
                    self._on_gauge(team, limit.period, spent, limit.amount)
            if self._on_state is not None:
                with contextlib.suppress(Exception):
                    start = self._bounds[limit.period][0]
                    self._on_state(
                        team, limit.period, start, spent, limit.amount, limit.warn_at_percent
                    )

    def _announce(self, limit: Limit, spent: Decimal, verdict: Verdict) -> None:
        """Log each (team, period, verdict) once per period."""
        key = (limit.team, limit.period, self._bounds[limit.period][0], verdict)
        if key in self._announced:
            return
        self._announced.add(key)
        if verdict == "reached":
            log.warning(
                "budget reached: team=%s period=%s spent=%s limit=%s action=%s",
                limit.team,
                limit.period,
                spent,
                limit.amount,
                limit.action,
            )
        else:
            log.warning(
                "budget warning: team=%s period=%s spent=%s limit=%s (warn at %s%%)",
                limit.team,
                limit.period,
                spent,
                limit.amount,
                limit.warn_at_percent,
            )


# ---------------------------------------------------------------- stage


def budget_exceeded(refusal: Refusal) -> web.Response:
    """429 in OpenAI's shape; ``x-should-retry: false`` so SDKs do not retry it."""
    limit = refusal.limit
    resets = refusal.resets_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    in_flight = (
        f" plus {refusal.reserved} USD reserved by calls in flight"
        if refusal.reserved > 0 and refusal.spent < limit.amount
        else ""
    )
    message = (
        f"Budget exceeded for team {limit.team!r}: {limit.period} spend of {refusal.spent} USD"
        f"{in_flight} has reached its limit of {limit.amount} USD. It resets at {resets}."
    )
    return error_response(
        429,
        message,
        "insufficient_quota",
        code="budget_exceeded",
        headers={"x-should-retry": "false"},
    )


class BudgetStage:
    """RequestStage: run AFTER the attribution stage (it reads ``exchange.attribution.team``).

    ``ceiling`` prices the most the call can cost from its request (``None``: reserve 0, as for
    unpriced calls)."""

    __slots__ = ("_ceiling", "_tracker")

    def __init__(self, tracker: BudgetTracker, ceiling: CostCeiling | None = None) -> None:
        self._tracker = tracker
        self._ceiling = ceiling

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        team = exchange.attribution.team
        if not self._tracker.budgeted(team):
            return None  # no budget: no estimate, no store, nothing to settle
        amount = _ZERO
        if self._ceiling is not None:
            try:
                amount = self._ceiling(exchange)
            except Exception:  # still admit or refuse on what is known; never skip the check
                log.exception("budget reservation estimate failed; reserving 0")
        outcome = await self._tracker.reserve(team, amount, exchange.id)
        if isinstance(outcome, Refusal):
            return budget_exceeded(outcome)
        if outcome is not None:
            exchange.extras[_EXTRAS_KEY] = outcome
        return None

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None:
        reservation = exchange.extras.pop(_EXTRAS_KEY, None)
        if not self._tracker.budgeted(record.team):
            if isinstance(reservation, Reservation):
                self._tracker.release(reservation)
            return
        held = reservation if isinstance(reservation, Reservation) else None
        self._tracker.settle(held, record.team, record.cost_usd, record.started_at)
        self._tracker.record(record.team, record.started_at, record.cost_usd)
