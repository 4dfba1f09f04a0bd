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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import orjson
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.cursor import CursorError, decode_cursor, encode_cursor
from proxy.admin.report_query import load_report as load_report  # re-exported: /meter/spend
from proxy.admin.reporting import (
    ReportError,
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
from proxy.teams.attribution import MAX_TAGS, TagsError, parse_tags, scrub_tags, scrubbed
from storage.queries import fetch_records

Clock = Callable[[], datetime]

ADMIN_ENGINE_KEY: Final = web.AppKey("meter_admin_engine", AsyncEngine)
ADMIN_CLOCK_KEY: Final[web.AppKey[Clock]] = web.AppKey("meter_admin_clock")

RECORDS_DEFAULT_LIMIT: Final = 100
RECORDS_MAX_LIMIT: Final = 1000  # a larger limit is clamped to this; "next" fetches the rest

# The query parameters each endpoint knows; anything else is a 400 naming it (a typo such as
# ``?tem=`` must not silently return everything).
SPEND_PARAMETERS: Final = frozenset(
    {"since", "until", "by", "format", "team", "model", "what_if", "savings"}
)
RECORDS_PARAMETERS: Final = frozenset({"limit", "since", "until", "team", "model", "tag", "cursor"})


def utc_now() -> datetime:
    return datetime.now(UTC)


def _clock(request: web.Request) -> Clock:
    return request.app.get(ADMIN_CLOCK_KEY, utc_now)


def unknown_parameters(query: Mapping[str, str], known: frozenset[str]) -> web.Response | None:
    """A 400 naming every query parameter not in ``known`` (None when all are known)."""
    unknown = sorted({name for name in query if name not in known})
    if not unknown:
        return None
    names = ", ".join(repr(name[:64]) for name in unknown[:10])
    return bad_request(
        f"unknown query parameter{'s' if len(unknown) > 1 else ''} {names}; "
        f"this endpoint takes {', '.join(sorted(known))}",
        code="unknown_parameter",
        param=unknown[0][:64],
    )


def _optional(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return value if value else None


async def spend_handler(request: web.Request) -> web.StreamResponse:
    """``?since=&until=&by=team,model&format=json|csv|table&team=&model=&what_if=&savings=``"""
    query = request.query
    if (unknown := unknown_parameters(query, SPEND_PARAMETERS)) is not None:
        return unknown
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


def parse_tag_filters(values: list[str]) -> dict[str, str]:
    """``tag=env=prod`` (repeatable, or ``tag=env=prod,feature=search``): rows must carry every
    one of these tags with exactly that value. Same grammar and bounds as ``X-Meter-Tags``, and
    key-like keys and values are fingerprinted as they were when stored; a key may also be that
    ``sha256:`` fingerprint itself (as ``/meter/records`` shows it)."""
    tags: dict[str, str] = {}
    for raw in values:
        try:
            parsed = scrub_tags(parse_tags(raw, stored_keys=True))
        except TagsError as exc:
            raise ReportError(f"tag filter {scrubbed(raw[:80])!r}: {exc}") from None
        if not parsed:
            raise ReportError("tag filter is empty: use tag=KEY=VALUE")
        for key, value in parsed.items():
            if tags.get(key, value) != value:
                raise ReportError(f"tag filter names {key!r} twice with different values")
            tags[key] = value
    if len(tags) > MAX_TAGS:
        raise ReportError(f"at most {MAX_TAGS} tag filters")
    return tags


async def records_handler(request: web.Request) -> web.StreamResponse:
    """``?limit=100&since=&until=&team=&model=&tag=KEY=VALUE&cursor=`` ->
    ``{"records": [newest first], "limit": N, "next": cursor | null}``.

    Order is ``(started_at, id)`` descending; ``next`` (when there are more rows) is passed back as
    ``cursor`` with the same filters. ``limit`` above 1000 is clamped to 1000 (the response says
    the limit used); ``next`` reaches the rest.
    """
    query = request.query
    if (unknown := unknown_parameters(query, RECORDS_PARAMETERS)) is not None:
        return unknown
    raw_limit = query.get("limit", str(RECORDS_DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        return bad_request(
            f"limit must be an integer, not {raw_limit[:40]!r}", code="invalid_limit", param="limit"
        )
    if limit < 1:
        return bad_request("limit must be at least 1", code="invalid_limit", param="limit")
    limit = min(limit, RECORDS_MAX_LIMIT)
    now = _clock(request)()
    try:
        since = parse_instant(query["since"], now) if _optional(query, "since") else None
        until = parse_instant(query["until"], now) if _optional(query, "until") else None
        tags = parse_tag_filters(query.getall("tag", []))
    except ReportError as exc:
        return bad_request(str(exc), code="invalid_report_parameter")
    before = None
    if "cursor" in query:
        try:
            before = decode_cursor(query["cursor"])
        except CursorError as exc:
            return bad_request(str(exc), code="invalid_cursor", param="cursor")
    rows = await fetch_records(
        request.app[ADMIN_ENGINE_KEY],
        limit=limit + 1,
        since=since,
        until=until,
        team=_optional(query, "team"),
        model=_optional(query, "model"),
        tags=tags,
        before=before,
    )
    page = rows[:limit]
    following = encode_cursor(page[-1]["started_at"], page[-1]["id"]) if len(rows) > limit else None
    body = orjson.dumps(
        {"records": [record_json(r) for r in page], "limit": limit, "next": following}
    )
    return web.Response(body=body, content_type="application/json")


def add_admin_routes(app: web.Application, engine: AsyncEngine, clock: Clock | None = None) -> None:
    app[ADMIN_ENGINE_KEY] = engine
    if clock is not None:
        app[ADMIN_CLOCK_KEY] = clock
    app.router.add_get("/meter/spend", spend_handler)
    app.router.add_get("/meter/records", records_handler)
