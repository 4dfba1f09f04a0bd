"""``GET /meter/spend`` and ``GET /meter/records``: the ledger, read over HTTP.

Wiring (``proxy.app``)::

    app[ADMIN_ENGINE_KEY] = engine            # the ledger's AsyncEngine
    app[ADMIN_CLOCK_KEY] = clock              # optional: () -> aware datetime (tests)
    app.router.add_get("/meter/spend", spend_handler)
    app.router.add_get("/meter/records", records_handler)

(or ``add_admin_routes(app, engine)``). Admin-token auth is the app middleware's job.
Money leaves as exact decimal strings; bad parameters get an OpenAI-shaped 400.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import orjson
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.reporting import (
    METRICS,
    RejectedSpend,
    ReportError,
    SpendReport,
    SpendRow,
    Totals,
    Window,
    build_report,
    iso,
    money,
    parse_by,
    parse_instant,
    resolve_window,
    to_csv,
    to_json,
    to_table,
)
from proxy.admin.spend_extras import extended_spend
from proxy.http.errors import bad_request
from storage.queries import fetch_records, spend
from storage.rejected import rejected_totals

Clock = Callable[[], datetime]

ADMIN_ENGINE_KEY: Final = web.AppKey("meter_admin_engine", AsyncEngine)
ADMIN_CLOCK_KEY: Final[web.AppKey[Clock]] = web.AppKey("meter_admin_clock")

RECORDS_DEFAULT_LIMIT: Final = 100
RECORDS_MAX_LIMIT: Final = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


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
            tuple(group[dim] for dim in by),
            Totals(**{name: group[name] for name in METRICS}),
        )
        for group in groups
        if group["requests"]
    )
    report = build_report(window, by, rows)
    if model is None:  # dead-lettered records: shown beside the report (they have no model column)
        count, cost = await rejected_totals(engine, window.since, window.until, team=team)
        if count:
            report = replace(report, rejected=RejectedSpend(requests=count, cost_usd=cost))
    return report


def _clock(request: web.Request) -> Clock:
    return request.app.get(ADMIN_CLOCK_KEY, utc_now)


def _optional(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return value if value else None


async def spend_handler(request: web.Request) -> web.StreamResponse:
    """``?since=&until=&by=team,model&format=json|csv|table&team=&model=&what_if=&savings=``"""
    query = request.query
    fmt = query.get("format", "json")
    if fmt not in ("json", "csv", "table"):
        return bad_request(f"format must be json, csv or table, not {fmt!r}", code="invalid_format")
    try:
        window = resolve_window(
            _optional(query, "since"), _optional(query, "until"), _clock(request)()
        )
        by = parse_by(query.getall("by", []))
    except ReportError as exc:
        return bad_request(str(exc), code="invalid_report_parameter")
    report = await load_report(
        request.app[ADMIN_ENGINE_KEY],
        window,
        by,
        team=_optional(query, "team"),
        model=_optional(query, "model"),
    )
    extended = await extended_spend(request, request.app[ADMIN_ENGINE_KEY], report, fmt)
    if extended is not None:
        return extended
    if fmt == "csv":
        return web.Response(text=to_csv(report), content_type="text/csv")
    if fmt == "table":
        return web.Response(text=to_table(report), content_type="text/plain")
    return web.Response(body=to_json(report), content_type="application/json")


def record_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger row for JSON: datetimes ISO-8601 UTC, money and unit counts as exact strings."""
    out = dict(record)
    for name in ("started_at", "finished_at"):
        if isinstance(out.get(name), datetime):
            out[name] = iso(out[name])
    cost = out.get("cost_usd")
    if isinstance(cost, Decimal):
        out["cost_usd"] = money(cost)
    out["units"] = {key: f"{value:f}" for key, value in (out.get("units") or {}).items()}
    return out


async def records_handler(request: web.Request) -> web.StreamResponse:
    """``?limit=100&since=&until=&team=&model=`` -> ``{"records": [newest first]}``"""
    query = request.query
    raw_limit = query.get("limit", str(RECORDS_DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        return bad_request(f"limit must be an integer, not {raw_limit!r}", code="invalid_limit")
    if limit < 1:
        return bad_request("limit must be at least 1", code="invalid_limit")
    limit = min(limit, RECORDS_MAX_LIMIT)
    now = _clock(request)()
    try:
        since = parse_instant(query["since"], now) if _optional(query, "since") else None
        until = parse_instant(query["until"], now) if _optional(query, "until") else None
    except ReportError as exc:
        return bad_request(str(exc), code="invalid_report_parameter")
    records = await fetch_records(
        request.app[ADMIN_ENGINE_KEY],
        limit=limit,
        since=since,
        until=until,
        team=_optional(query, "team"),
        model=_optional(query, "model"),
    )
    body = orjson.dumps({"records": [record_json(r) for r in records]})
    return web.Response(body=body, content_type="application/json")


def add_admin_routes(app: web.Application, engine: AsyncEngine, clock: Clock | None = None) -> None:
    app[ADMIN_ENGINE_KEY] = engine
    if clock is not None:
        app[ADMIN_CLOCK_KEY] = clock
    app.router.add_get("/meter/spend", spend_handler)
    app.router.add_get("/meter/records", records_handler)
