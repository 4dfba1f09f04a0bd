"""A fake of OpenAI's Admin API Usage and Costs endpoints, built from the published shapes.

Shapes transcribed from ``openai/openai-openapi`` ``openapi.yaml`` (paths ``/organization/costs``
and ``/organization/usage/{completions,embeddings,moderations,images,audio_speeches,
audio_transcriptions}``; schemas ``UsageResponse``, ``UsageTimeBucket``, ``CostsResult``,
``Usage*Result``): a page ``{object: page, data: [bucket], has_more, next_page}``, a bucket per
UTC day ``{object: bucket, start_time, end_time, results}`` (every day of the range, empty days
included), results grouped by the ``group_by`` fields (the others null), ``amount.value`` a JSON
number in USD. ``limit`` is checked against the documented ranges (usage ``1d``: 1-31, costs:
1-180); ``bucket_width`` other than ``1d`` is refused.

What OpenAI billed is the list ``calls`` of :class:`Billed` (add them yourself, e.g. from what the
fake upstream served). Knobs:

* ``page_size`` -- at most this many buckets per page (fewer than ``limit``: forces paging);
* ``throttle(n, retry_after)`` -- the next ``n`` requests answer 429 with ``Retry-After``;
* ``fail(status, message)`` -- every request answers that error (``None`` clears it);
* ``pending[day] = fraction`` -- that day is not final yet: its numbers are reported scaled down
  (OpenAI restates recent buckets); ``del pending[day]`` settles it;
* ``admin_key`` -- when set, requests with another bearer key get 401.

Observations: ``requests`` (path, query as a list of pairs, Authorization header).
Use it on its own (``async with FakeAdminApi() as api``) or on the fake upstream's origin
(``upstream.extra_routes.append(api.add_routes)`` before the upstream starts).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from tests.support.loopback import serve_on_loopback

DAY = 86400
USAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "completions": (
        "input_tokens",
        "input_cached_tokens",
        "input_cache_write_tokens",
        "output_tokens",
        "input_audio_tokens",
        "output_audio_tokens",
        "input_image_tokens",
        "output_image_tokens",
    ),
    "embeddings": ("input_tokens",),
    "moderations": ("input_tokens",),
    "images": ("images",),
    "audio_speeches": ("characters",),
    "audio_transcriptions": ("seconds",),
}
USAGE_GROUPS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
COST_GROUPS = ("project_id", "line_item", "api_key_id")


@dataclass
class Billed:
    """What OpenAI counted and charged for some calls (one day, project, key, model)."""

    at: datetime
    project_id: str
    model: str
    cost: Decimal
    source: str = "completions"
    api_key_id: str = "key_proxy"
    requests: int = 1
    counts: dict[str, int] = field(default_factory=dict)  # OpenAI's field names
    line_item: str | None = None


@dataclass
class SeenAdminRequest:
    path: str
    query: list[tuple[str, str]]
    authorization: str | None


class FakeAdminApi:
    def __init__(self, *, admin_key: str | None = None) -> None:
        self.admin_key = admin_key
        self.calls: list[Billed] = []
        self.page_size = 2
        self.pending: dict[date, Decimal] = {}
        self.requests: list[SeenAdminRequest] = []
        self._throttle: list[str] = []
        self._fail: tuple[int, str] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/organization/costs", self._costs)
        router.add_get("/v1/organization/usage/{source}", self._usage)

    async def __aenter__(self) -> FakeAdminApi:
        app = web.Application()
        self.add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = await serve_on_loopback(self._runner)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- knobs ----------------------------------------------------------------------------------

    def throttle(self, times: int = 1, retry_after: str = "1") -> None:
        self._throttle.extend([retry_after] * times)

    def fail(self, status: int | None, message: str = "") -> None:
        self._fail = None if status is None else (status, message)

    # -- handlers -------------------------------------------------------------------------------

    def _gate(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        self.requests.append(SeenAdminRequest(request.path, list(request.query.items()), auth))
        if self._throttle:
            retry_after = self._throttle.pop(0)
            return _error(
                429, "Rate limit reached for admin requests", {"Retry-After": retry_after}
            )
        if self._fail is not None:
            return _error(*self._fail)
        if self.admin_key is not None and auth != f"Bearer {self.admin_key}":
            shown = (auth or "")[len("Bearer ") :]
            return _error(401, f"Incorrect API key provided: {shown}.")
        return None

    def _window(
        self, request: web.Request, max_limit: int, default_limit: int
    ) -> tuple[int, int, list[str], int, int] | web.Response:
        q = request.query
        try:
            start = int(q["start_time"])
            end = int(q.get("end_time", str(start + 7 * DAY)))
            limit = int(q.get("limit", str(default_limit)))
            offset = (
                int(base64.b64decode(q["page"]).decode().removeprefix("page_"))
                if "page" in q
                else 0
            )
        except (KeyError, ValueError):
            return _error(400, "invalid start_time, end_time, limit or page")
        if q.get("bucket_width", "1d") != "1d":
            return _error(400, "this fake serves bucket_width=1d only")
        if not 1 <= limit <= max_limit:
            return _error(400, f"limit must be between 1 and {max_limit}")
        return start, end, q.getall("group_by", []), min(limit, self.page_size), offset

    def _page(self, buckets: list[dict[str, Any]], offset: int, size: int) -> web.Response:
        chunk = buckets[offset : offset + size]
        more = offset + size < len(buckets)
        cursor = base64.b64encode(f"page_{offset + size}".encode()).decode() if more else None
        body = {"object": "page", "data": chunk, "has_more": more, "next_page": cursor}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _scale(self, day: date) -> Decimal:
        return self.pending.get(day, Decimal(1))

    async def _usage(self, request: web.Request) -> web.Response:
        if (refused := self._gate(request)) is not None:
            return refused
        source = request.match_info["source"]
        if source not in USAGE_FIELDS:
            return _error(404, f"unknown usage endpoint {source}")
        window = self._window(request, 31, 7)
        if isinstance(window, web.Response):
            return window
        start, end, group_by, size, offset = window
        if any(g not in USAGE_GROUPS for g in group_by):
            return _error(400, "invalid group_by")
        buckets = []
        for day_start in range(start - start % DAY, end, DAY):
            day = datetime.fromtimestamp(day_start, UTC).date()
            groups: dict[tuple[Any, ...], dict[str, Any]] = {}
            for call in self.calls:
                if call.source != source or call.at.date() != day:
                    continue
                dims = {
                    "project_id": call.project_id,
                    "api_key_id": call.api_key_id,
                    "model": call.model,
                }
                key = tuple(dims.get(g) for g in USAGE_GROUPS if g in group_by)
                result = groups.get(key)
                if result is None:
                    result = {
                        "object": f"organization.usage.{source}.result",
                        **dict.fromkeys(USAGE_FIELDS[source], 0),
                        "num_model_requests": 0,
                        **{g: (dims.get(g) if g in group_by else None) for g in USAGE_GROUPS},
                    }
                    if source != "completions":
                        for g in ("batch", "service_tier"):
                            result.pop(g)
                    groups[key] = result
                scale = self._scale(day)
                result["num_model_requests"] += int(call.requests * scale)
                for name in USAGE_FIELDS[source]:
                    result[name] += int(call.counts.get(name, 0) * scale)
            buckets.append(_bucket(day_start, list(groups.values())))
        return self._page(buckets, offset, size)

    async def _costs(self, request: web.Request) -> web.Response:
        if (refused := self._gate(request)) is not None:
            return refused
        window = self._window(request, 180, 7)
        if isinstance(window, web.Response):
            return window
        start, end, group_by, size, offset = window
        if any(g not in COST_GROUPS for g in group_by):
            return _error(400, "invalid group_by")
        buckets = []
        for day_start in range(start - start % DAY, end, DAY):
            day = datetime.fromtimestamp(day_start, UTC).date()
            sums: dict[tuple[Any, ...], Decimal] = {}
            dims_of: dict[tuple[Any, ...], dict[str, Any]] = {}
            for call in self.calls:
                if call.at.date() != day:
                    continue
                dims = {
                    "project_id": call.project_id,
                    "line_item": call.line_item or f"{call.model}, input",
                    "api_key_id": call.api_key_id,
                }
                key = tuple(dims[g] for g in COST_GROUPS if g in group_by)
                sums[key] = sums.get(key, Decimal(0)) + call.cost * self._scale(day)
                dims_of[key] = dims
            results = [
                {
                    "object": "organization.costs.result",
                    # A JSON number, as the API sends it (the client must read it exactly).
                    "amount": {"value": float(amount), "currency": "usd"},
                    **{g: (dims_of[key][g] if g in group_by else None) for g in COST_GROUPS},
                    "quantity": None,
                    "quantity_unit": None,
                }
                for key, amount in sums.items()
            ]
            buckets.append(_bucket(day_start, results))
        return self._page(buckets, offset, size)


def _bucket(day_start: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "bucket",
        "start_time": day_start,
        "end_time": day_start + DAY,
        "results": results,
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def days_ago(n: int, now: datetime | None = None) -> date:
    return ((now or datetime.now(UTC)) - timedelta(days=n)).date()
