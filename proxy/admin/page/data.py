"""What the spend page shows, gathered through the same read side as ``openai-meter report`` and
``GET /meter/spend`` (:func:`proxy.admin.admin_api.load_report`, :func:`proxy.admin.whatif.load_extras`)
and shaped into plain values for the template (money as exact decimal strings, one number of places
for the whole page).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.book import PriceBook
from pricing.listing import describe_entry
from pricing.whatif import SAVINGS_KINDS, Lever
from proxy.admin.admin_api import load_report
from proxy.admin.reporting import SpendReport, SpendRow, Window, build_report, iso, month_start
from proxy.admin.whatif import Extras, LeverTotals, load_extras, share
from proxy.teams.budgets import Limit, period_bounds
from storage.reports import spent_by_team
from storage.whatif import rejected_counts

PRESETS: Final[dict[str, str]] = {
    "today": "Today",
    "7d": "7 days",
    "month": "This month",
    "last-month": "Last month",
}
DEFAULT_PRESET: Final = "month"
DEFAULT_LEVERS: Final[tuple[str, ...]] = ("model=gpt-4.1-nano", "tier=batch", "tier=flex")
TOP_MODELS: Final = 10
MIN_PLACES: Final = 6
MAX_PLACES: Final = 10
TIER_COLUMNS: Final[tuple[str, ...]] = ("standard", "batch", "flex", "priority")


def preset_window(preset: str, now: datetime) -> Window:
    """UTC windows: ``today`` / ``7d`` / ``month`` until now; ``last-month`` the whole of it."""
    now = now.astimezone(UTC)
    if preset == "today":
        return Window(now.replace(hour=0, minute=0, second=0, microsecond=0), now)
    if preset == "7d":
        return Window(now - timedelta(days=7), now)
    start = month_start(now)
    if preset == "last-month":
        previous = month_start(start - timedelta(days=1))
        return Window(previous, start)
    return Window(start, now)


def places_for(values: Iterable[Decimal]) -> int:
    """Decimal places that show every amount exactly (at least 6, at most the ledger's 10)."""
    places = MIN_PLACES
    for value in values:
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            places = min(-exponent, MAX_PLACES)
    return places


@dataclass(slots=True)
class Money:
    """Collects every amount of the page first, then prints them all with one number of places."""

    amounts: list[Decimal] = field(default_factory=list)

    def add(self, value: Decimal) -> Decimal:
        self.amounts.append(value)
        return value

    def formatter(self) -> Any:
        places = places_for(self.amounts)
        quantum = Decimal(1).scaleb(-places)

        def fmt(value: Decimal) -> str:
            text = f"{value.quantize(quantum):f}"
            return "\N{MINUS SIGN}" + text[1:] if text.startswith("-") else text

        return fmt


@dataclass(frozen=True, slots=True)
class PageInputs:
    window: Window
    preset: str | None
    levers: tuple[Lever, ...]
    now: datetime


@dataclass(frozen=True, slots=True)
class BudgetView:
    limits: tuple[Limit, ...] = ()
    timezone: str = "UTC"


async def gather(
    engine: AsyncEngine, book: PriceBook, budget: BudgetView, inputs: PageInputs
) -> dict[str, Any]:
    """Everything the page shows, as template values."""
    window = inputs.window
    # Independent reads, each on its own pooled connection (SQLite in WAL mode reads in parallel).
    by_day_team, by_model, extras, spent, rejected = await asyncio.gather(
        load_report(engine, window, ("day", "team")),
        load_report(engine, window, ("model",)),
        load_extras(engine, book, window, ("team",), inputs.levers, with_savings=True),
        _budget_spend(engine, budget, inputs.now),
        rejected_counts(engine, window.since, window.until),
    )
    by_team = regroup(by_day_team, (1,), ("team",))  # the same rows summed: no second read
    return shape(book, budget, inputs, by_team, by_day_team, by_model, extras, spent, rejected)


def regroup(report: SpendReport, keep: tuple[int, ...], by: tuple[str, ...]) -> SpendReport:
    """The report grouped by fewer dimensions (``keep``: their positions), rows summed exactly."""
    rows = (SpendRow(tuple(row.group[i] for i in keep), row.totals) for row in report.rows)
    return build_report(report.window, by, rows)


async def _budget_spend(
    engine: AsyncEngine, budget: BudgetView, now: datetime
) -> dict[tuple[str, str], Decimal]:
    if not budget.limits:
        return {}
    tz = ZoneInfo(budget.timezone)
    starts: dict[str, datetime] = {
        p: period_bounds(p, now, tz)[0] for p in {limit.period for limit in budget.limits}
    }
    teams = sorted({limit.team for limit in budget.limits})
    found = await spent_by_team(engine, teams, starts, now)
    return {(team, period): amount for team, per in found.items() for period, amount in per.items()}


def shape(
    book: PriceBook,
    budget: BudgetView,
    inputs: PageInputs,
    by_team: SpendReport,
    by_day_team: SpendReport,
    by_model: SpendReport,
    extras: Extras,
    spent: dict[tuple[str, str], Decimal],
    rejected: dict[str | None, int],
) -> dict[str, Any]:
    """Pure: reports -> template values."""
    money = Money()
    total = by_team.total
    money.add(total.cost_usd)
    for row in by_team.rows:
        money.add(row.totals.cost_usd)
    for row in by_model.rows:
        money.add(row.totals.cost_usd)
    for (_, _), amount in spent.items():
        money.add(amount)
    for limit in budget.limits:
        money.add(limit.amount)
    lever_names = [lever.name for lever in inputs.levers]
    for per_lever in [*extras.what_if.values(), extras.total_what_if()]:
        for lever_totals in per_lever.values():
            money.add(lever_totals.cost_usd)
            money.add(lever_totals.actual_usd)
            money.add(lever_totals.difference_usd)
    for item in [*extras.savings.values(), extras.total_savings()]:
        for amount in item.amounts.values():
            money.add(amount)
        money.add(item.total_usd)
    fmt = money.formatter()

    limits_by_team: dict[str, list[Limit]] = {}
    for limit in budget.limits:
        limits_by_team.setdefault(limit.team, []).append(limit)

    def budgets_of(team: str) -> list[dict[str, Any]]:
        out = []
        for limit in sorted(limits_by_team.get(team, []), key=lambda x: x.period):
            used = spent.get((team, limit.period), Decimal(0))
            percent = (used * 100 / limit.amount) if limit.amount else Decimal(100)
            out.append(
                {
                    "period": limit.period,
                    "spent": fmt(used),
                    "limit": fmt(limit.amount),
                    "percent": f"{percent.quantize(Decimal('0.1')):f}",
                    "meter_value": f"{min(percent, Decimal(100)).quantize(Decimal('0.1')):f}",
                    "reached": used >= limit.amount,
                    "action": limit.action,
                }
            )
        return out

    teams = []
    for row in by_team.rows:
        team = row.group[0] or "unassigned"
        t = row.totals
        teams.append(
            {
                "team": team,
                "requests": t.requests,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cost": fmt(t.cost_usd),
                "budgets": budgets_of(team),
                "unpriced": t.unpriced_requests,
                "estimated": t.estimated_requests,
                "rejected": rejected.get(team, 0),
            }
        )
    models = sorted(by_model.rows, key=lambda r: (-r.totals.cost_usd, r.group[0] or ""))
    top_models = [
        {
            "model": row.group[0] or "(none)",
            "requests": row.totals.requests,
            "input_tokens": row.totals.input_tokens,
            "output_tokens": row.totals.output_tokens,
            "cost": fmt(row.totals.cost_usd),
            "cost_value": f"{row.totals.cost_usd:f}",
            "unpriced": row.totals.unpriced_requests,
        }
        for row in models[:TOP_MODELS]
    ]

    days = sorted({row.group[0] or "" for row in by_day_team.rows})
    team_names = sorted({row.group[1] or "unassigned" for row in by_day_team.rows})
    cells = {
        (row.group[0], row.group[1] or "unassigned"): row.totals.cost_usd
        for row in by_day_team.rows
    }
    chart = {
        "days": days,
        "teams": [
            {"team": team, "values": [f"{cells.get((d, team), Decimal(0)):f}" for d in days]}
            for team in team_names
        ],
        "models": [{"model": m["model"], "value": m["cost_value"]} for m in top_models],
    }
    daily_rows = [
        {"day": d, "cells": [fmt(cells.get((d, team), Decimal(0))) for team in team_names]}
        for d in days
    ]

    def lever_cells(per_lever: dict[str, LeverTotals]) -> list[dict[str, Any]]:
        return [
            {
                "lever": name,
                "actual": fmt(per_lever[name].actual_usd),
                "cost": fmt(per_lever[name].cost_usd),
                "difference": fmt(per_lever[name].difference_usd),
                "saves": per_lever[name].difference_usd < 0,
                "repriced": per_lever[name].repriced_requests,
                "not_repriced": per_lever[name].not_repriced_requests,
                "reasons": sorted(per_lever[name].not_repriced.items()),
            }
            for name in lever_names
        ]

    what_if_rows = [
        {
            "team": row.group[0] or "unassigned",
            "levers": lever_cells(extras.lever_totals(row.group)),
        }
        for row in by_team.rows
    ]
    savings_rows = []
    for row in by_team.rows:
        item = extras.savings_of(row.group)
        savings_rows.append(
            {
                "team": row.group[0] or "unassigned",
                "amounts": [fmt(item.amounts[k]) for k in SAVINGS_KINDS],
                "total": fmt(item.total_usd),
                "share": share(row.totals.cached_input_tokens, row.totals.input_tokens),
            }
        )
    total_savings = extras.total_savings()
    window = inputs.window
    query = {"since": iso(window.since), "until": iso(window.until), "by": "team,model"}
    csv_query = urlencode({**query, "format": "csv"})
    json_query = urlencode({**query, "by": "team"})
    return {
        "window": {"since": iso(window.since), "until": iso(window.until)},
        "since_date": window.since.date().isoformat(),
        "until_date": _until_date(window.until),
        "preset": inputs.preset,
        "presets": PRESETS,
        "timezone": budget.timezone,
        "generated": iso(inputs.now.replace(microsecond=0)),
        "total": {
            "requests": total.requests,
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "cost": fmt(total.cost_usd),
            "unpriced": total.unpriced_requests,
            "estimated": total.estimated_requests,
            "rejected": sum(rejected.values()),
        },
        "teams": teams,
        "has_budgets": bool(budget.limits),
        "show_rejected": True,
        "top_models": top_models,
        "chart": chart,
        "chart_teams": team_names,
        "daily_rows": daily_rows,
        "levers": lever_names,
        "what_if_rows": what_if_rows,
        "what_if_total": lever_cells(extras.total_what_if()),
        "savings_kinds": SAVINGS_KINDS,
        "savings_rows": savings_rows,
        "savings_total": {
            "amounts": [fmt(total_savings.amounts[k]) for k in SAVINGS_KINDS],
            "total": fmt(total_savings.total_usd),
            "share": share(total.cached_input_tokens, total.input_tokens),
        },
        "csv_url": f"/meter/spend?{csv_query}",
        "json_url": f"/meter/spend?{json_query}",
        "prices": price_rows(book, window, [r.group[0] for r in by_model.rows]),
        "lever_text": ", ".join(lever_names),
    }


def _until_date(until: datetime) -> str:
    """The date input's value for an exclusive end: midnight stays that day, else the next day."""
    day = until.astimezone(UTC).date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (day if until == midnight else day + timedelta(days=1)).isoformat()


def price_rows(
    book: PriceBook, window: Window, models: Sequence[str | None]
) -> list[dict[str, Any]]:
    """Catalog entries in effect at any time in the window, for the models the window used."""
    names = sorted({c.removeprefix("ft:") for m in models if m and (c := book.canonical(m))})
    first = window.since.date()
    last = (
        (window.until - timedelta(microseconds=1)).date() if window.until > window.since else first
    )
    rows = []
    for name in names:
        seen: set[str] = set()
        day: date = first
        while day <= last:
            entry = book.entry_at(name, day)
            if entry is not None and entry.key not in seen:
                seen.add(entry.key)
                item = describe_entry(book, entry, day)
                tiers = item["tiers"]
                rows.append(
                    {
                        "model": name,
                        "effective_from": item["effective_from"],
                        "effective_until": item["effective_until"],
                        "tiers": [
                            (
                                tier,
                                tiers.get(tier, {}).get("input"),
                                tiers.get(tier, {}).get("cached_input"),
                                tiers.get(tier, {}).get("output"),
                            )
                            for tier in TIER_COLUMNS
                            if tier in tiers
                        ],
                        "source": item["source"],
                        "checked": item["checked"],
                    }
                )
            nxt = entry.effective_until if entry is not None else None
            day = nxt if nxt is not None and nxt > day else day + timedelta(days=1)
            if entry is not None and entry.effective_until is None:
                break
    return rows
