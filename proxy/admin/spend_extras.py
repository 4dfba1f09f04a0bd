"""``GET /meter/spend?what_if=…&savings=1``: the what-if and savings columns over HTTP.

``what_if`` is repeatable (and comma-separated): ``model=gpt-4.1-nano``, ``tier=batch``, …;
``savings`` is ``1``/``true``. The columns come from :mod:`proxy.admin.whatif`, the same code as
``openai-meter report --what-if … --savings`` and the spend page.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.whatif import LeverError, parse_levers
from proxy.admin.prices_api import PRICEBOOK_KEY
from proxy.admin.reporting import SpendReport
from proxy.admin.whatif import extend_json, extended_csv, extended_table, load_extras
from proxy.http.errors import bad_request

TRUE_VALUES: Final = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES: Final = frozenset({"", "0", "false", "no", "off"})


async def extended_spend(
    request: web.Request, engine: AsyncEngine, report: SpendReport, fmt: str
) -> web.Response | None:
    """The extended response, a 400 for a bad lever, or ``None`` when neither was asked for."""
    query = request.query
    texts = query.getall("what_if", [])
    raw_savings = query.get("savings", "").strip().lower()
    if raw_savings not in TRUE_VALUES | FALSE_VALUES:
        return bad_request(
            f"savings must be 1 or 0, not {raw_savings[:40]!r}", code="invalid_savings"
        )
    with_savings = raw_savings in TRUE_VALUES
    if not texts and not with_savings:
        return None
    book = request.app[PRICEBOOK_KEY]
    try:
        levers = parse_levers(list(texts), book)
    except LeverError as exc:
        return bad_request(str(exc), code="invalid_what_if")
    filters = {name: query[name] for name in ("team", "model") if query.get(name)}
    extras = await load_extras(
        engine,
        book,
        report.window,
        report.by,
        levers,
        with_savings=with_savings,
        filters=filters,
    )
    if fmt == "csv":
        return web.Response(text=extended_csv(report, extras), content_type="text/csv")
    if fmt == "table":
        return web.Response(text=extended_table(report, extras), content_type="text/plain")
    body = orjson.dumps(extend_json(report, extras), option=orjson.OPT_INDENT_2) + b"\n"
    return web.Response(body=body, content_type="application/json")
