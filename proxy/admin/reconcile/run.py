"""One reconciliation: read OpenAI's side and the ledger's for the same UTC days, then compare.

Shared by ``openai-meter reconcile`` and the server's schedule (:mod:`.service`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.reconcile.client import AdminClient
from proxy.admin.reconcile.compare import (
    COUNTERS,
    LedgerFacts,
    LedgerGroup,
    Reconciliation,
    compare,
)
from proxy.admin.reconcile.shapes import USAGE_SOURCES, CostResult, UsageResult
from proxy.admin.reporting import ReportError, resolve_window
from proxy.settings import ReconcileSettings
from storage.reconcile import dead_letters_by_day, ledger_groups, projects_seen


class ReconcileConfigError(ValueError):
    """Missing admin key or a bad window; the message is for the user."""


@dataclass(frozen=True, slots=True)
class Days:
    since: date
    until: date  # exclusive

    @property
    def start(self) -> datetime:
        return midnight(self.since)

    @property
    def end(self) -> datetime:
        return midnight(self.until)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def resolve_days(since: str | None, until: str | None, now: datetime) -> Days:
    """Whole UTC days covering ``[since, until)`` (default: the last 7 days, today included)."""
    try:
        window = resolve_window(since or "7d", until, now)
    except ReportError as exc:
        raise ReconcileConfigError(str(exc)) from exc
    first = window.since.date()
    last = window.until.date()
    if window.until != midnight(last):
        last += timedelta(days=1)
    if last <= first:
        last = first + timedelta(days=1)
    if (last - first).days > 366:
        raise ReconcileConfigError("reconcile at most 366 days at once")
    return Days(first, last)


def recent_days(now: datetime, restate_days: int) -> Days:
    """What the server re-reads: the last ``restate_days`` days and today."""
    today = now.astimezone(UTC).date()
    return Days(today - timedelta(days=restate_days), today + timedelta(days=1))


def admin_key(settings: ReconcileSettings, environ: Mapping[str, str]) -> str:
    key = environ.get(settings.admin_key_env, "").strip()
    if not key:
        raise ReconcileConfigError(
            f"no admin key: set {settings.admin_key_env} to an OpenAI admin key (sk-admin-...)"
        )
    return key


async def read_openai(
    client: AdminClient, days: Days
) -> tuple[list[UsageResult], list[CostResult]]:
    start, end = int(days.start.timestamp()), int(days.end.timestamp())
    usage: list[UsageResult] = []
    # One endpoint at a time: the Admin API rate-limits per organization.
    for source in USAGE_SOURCES:
        usage.extend(await client.usage(source, start, end))
    costs = await client.costs(start, end)
    return usage, costs


async def read_ledger(engine: AsyncEngine, days: Days) -> LedgerFacts:
    groups, seen, dead = await asyncio.gather(
        ledger_groups(engine, days.start, days.end),
        projects_seen(engine, days.start, days.end),
        dead_letters_by_day(engine, days.start, days.end),
    )
    return LedgerFacts(
        groups=tuple(
            LedgerGroup(
                day=g["day"],
                project=g["project"],
                model=g["model"],
                counts={name: g.get(name, 0) for name in COUNTERS},
                cost=g["cost"],
                unpriced=g["unpriced"],
                estimated=g["estimated"],
                timeouts=g["timeouts"],
                disconnects=g["disconnects"],
            )
            for g in groups
        ),
        projects_seen=frozenset(seen),
        dead_letters=dead,
    )


async def reconcile(
    client: AdminClient,
    engine: AsyncEngine,
    days: Days,
    settings: ReconcileSettings,
    now: datetime,
    *,
    tolerance_percent: Decimal | None = None,
) -> Reconciliation:
    (usage, costs), ledger = await asyncio.gather(
        read_openai(client, days), read_ledger(engine, days)
    )
    return compare(
        usage=usage,
        costs=costs,
        ledger=ledger,
        since=days.since,
        until=days.until,
        now=now,
        restate_days=settings.restate_days,
        tolerance_percent=(
            tolerance_percent if tolerance_percent is not None else settings.tolerance_percent
        ),
        default_project=settings.default_project,
        admin_key=client.fingerprint,
    )
