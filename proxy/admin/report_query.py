"""Loading a spend report from the ledger: the query plus the pure shaping in
:mod:`proxy.admin.reporting`. Shared by ``openai-meter report`` and ``GET /meter/spend``; it imports
no HTTP framework, so the CLI does not pay for aiohttp.

Service tiers are reported in the catalog's vocabulary (``standard``, ``batch``, ``flex``,
``priority``, ``scale`` -- the words of ``price_ref`` and ``openai-meter prices``): OpenAI's
``default`` (and ``auto``) read ``standard``. The ledger's column keeps OpenAI's word.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.tiers import normalize_tier
from proxy.admin.reporting import (
    METRICS,
    RejectedSpend,
    SpendReport,
    SpendRow,
    Totals,
    Window,
    build_report,
)
from storage.queries import spend
from storage.rejected import rejected_totals


async def load_report(
    engine: AsyncEngine,
    window: Window,
    by: tuple[str, ...],
    *,
    team: str | None = None,
    model: str | None = None,
) -> SpendReport:
    """Query the ledger and shape the report (shared by the CLI and ``/meter/spend``)."""
    filters = {name: value for name, value in (("team", team), ("model", model)) if value}
    groups = await spend(engine, since=window.since, until=window.until, by=by, filters=filters)
    rows = (
        SpendRow(
            tuple(_shown(dim, group[dim]) for dim in by),
            Totals(**{name: group[name] for name in METRICS}),
        )
        for group in groups
        if group["requests"]
    )
    report = build_report(window, by, rows)  # merges groups that now read the same
    if model is None:  # dead-lettered records: shown beside the report (they have no model column)
        count, cost = await rejected_totals(engine, window.since, window.until, team=team)
        if count:
            report = replace(report, rejected=RejectedSpend(requests=count, cost_usd=cost))
    return report


def _shown(dimension: str, value: str | None) -> str | None:
    """Service tiers in the catalog's words (``default`` -> ``standard``, as in ``price_ref``);
    a tier the catalog does not know is shown as recorded."""
    if dimension == "service_tier" and value is not None:
        return normalize_tier(value) or value
    return value
