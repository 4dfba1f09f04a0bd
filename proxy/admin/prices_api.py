"""``GET /meter/prices?model=&at=``: the price list in effect on a date, as JSON.

Money is a decimal string. ``model`` may be a snapshot or ``ft:`` name (404 when nothing prices
it); ``at`` is ``YYYY-MM-DD`` or an ISO timestamp (default: today, UTC). Admin authentication is
applied by the app's ``/meter/*`` middleware, not here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
from aiohttp import web

from pricing.book import PriceBook
from pricing.listing import price_list

PRICEBOOK_KEY = web.AppKey("pricebook", PriceBook)


def _error(status: int, message: str, param: str | None, code: str) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _parse_at(text: str) -> date:
    if len(text) == 10:
        return date.fromisoformat(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


async def prices_handler(request: web.Request) -> web.Response:
    book = request.app[PRICEBOOK_KEY]
    at_text = request.query.get("at")
    model = request.query.get("model") or None
    try:
        day = _parse_at(at_text) if at_text else datetime.now(UTC).date()
    except ValueError:
        return _error(
            400, f"'at' is not a date: {at_text!r} (use YYYY-MM-DD)", "at", "invalid_date"
        )
    items = price_list(book, day, model)
    if model and not items:
        return _error(404, f"no price for model {model!r} on {day}", "model", "model_not_priced")
    body = orjson.dumps({"at": day.isoformat(), "model": model, "prices": items})
    return web.Response(body=body, content_type="application/json")
