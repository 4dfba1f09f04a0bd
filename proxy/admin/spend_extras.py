"""``GET /meter/spend?what_if=…&savings=1``: the what-if and savings columns over HTTP.

``what_if`` is repeatable (and comma-separated): ``model=gpt-4.1-nano``, ``tier=batch``, …;
``savings`` is ``1``/``true`` or ``0``/``false`` (any case). Anything else -- an empty lever
(``what_if=``, ``what_if=tier=batch,``), ``savings=yes``, ``savings=`` or two ``savings`` -- is a 400
naming the parameter and what it takes, like an unknown parameter: a caller never gets a report it
did not ask for. The columns come from :mod:`proxy.admin.whatif`, the same code as
``openai-meter report --what-if … --savings`` and the spend page.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.whatif import WHAT_IF_TIERS, LeverError, has_empty_lever, parse_levers
from proxy.admin.prices_api import PRICEBOOK_KEY
from proxy.admin.reporting import SpendReport
from proxy.admin.whatif import extend_json, extended_csv, extended_table, load_extras
from proxy.http.errors import bad_request

TRUE_VALUES: Final = frozenset({"1", "true"})
FALSE_VALUES: Final = frozenset({"0", "false"})
LEVER_GRAMMAR: Final = f"model=MODEL or tier={'|'.join(WHAT_IF_TIERS)} (repeat what_if, or separate levers with commas)"


def _savings(values: list[str]) -> bool | web.Response:
    """``savings``: absent -> False; ``1``/``true`` or ``0``/``false`` once; anything else a 400."""
    if not values:
        return False
    raw = values[0]
    if len(values) > 1 or raw.lower() not in TRUE_VALUES | FALSE_VALUES:
        shown = "given twice" if len(values) > 1 else f"not {raw[:40]!r}"
        return bad_request(
            f"savings must be 1 or 0 (or true/false), {shown}",
            code="invalid_savings",
            param="savings",
        )
    return raw.lower() in TRUE_VALUES


def _empty_lever(texts: list[str]) -> web.Response | None:
    """A 400 when a ``what_if`` value, or one of its comma-separated levers, is empty."""
    if not has_empty_lever(texts):
        return None
    return bad_request(
        f"what_if must not be empty or hold an empty lever: give {LEVER_GRAMMAR}",
        code="invalid_what_if",
        param="what_if",
    )


async def extended_spend(
    request: web.Request, engine: AsyncEngine, report: SpendReport, fmt: str
) -> web.Response | None:
    """The extended response, a 400 for a bad lever, or ``None`` when neither was asked for."""
    query = request.query
    texts = query.getall("what_if", [])
    with_savings = _savings(query.getall("savings", []))
    if isinstance(with_savings, web.Response):
        return with_savings
    if (empty := _empty_lever(texts)) is not None:
        return empty
    if not texts and not with_savings:
        return None
    book = request.app[PRICEBOOK_KEY]
    try:
        levers = parse_levers(list(texts), book)
    except LeverError as exc:
        return bad_request(str(exc), code="invalid_what_if", param="what_if")
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
