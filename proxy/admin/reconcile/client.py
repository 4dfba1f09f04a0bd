"""A small client for OpenAI's Admin API Usage and Costs endpoints, through the configured upstream.

It is handed the same kind of session forwarding uses (:func:`proxy.http.upstream_session.
open_upstream_session`: TLS settings, connection limit) and the same egress proxy
(:func:`proxy.http.forward.egress_proxy_for`), and reaches ``{upstream}/v1/organization/...``.

* pages through ``has_more`` / ``next_page`` (a repeated cursor or more than
  :data:`MAX_PAGES` pages is an error, never an endless loop);
* 429 and 5xx answers are retried after ``Retry-After`` (seconds or an HTTP date) or an exponential
  back-off, each wait capped at ``max_delay_s``, at most ``max_attempts`` tries;
* the admin key is only ever sent in the ``Authorization`` header: every error message is scrubbed
  of it and names the key by its fingerprint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import urlencode

from aiohttp import ClientError, ClientSession, ClientTimeout
from yarl import URL

from proxy.admin.reconcile.shapes import (
    AdminShapeError,
    CostResult,
    Page,
    UsageResult,
    cost_results,
    parse_json,
    parse_page,
    usage_results,
)
from proxy.http.forward import UpstreamTarget
from proxy.teams.attribution import key_fingerprint

MAX_PAGES: Final = 1000
MAX_ERROR_CHARS: Final = 300
USAGE_PAGE_LIMIT: Final = 31  # bucket_width=1d: at most 31 buckets per page
COSTS_PAGE_LIMIT: Final = 180  # costs: at most 180 buckets per page
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# Per request, whatever the session's own timeout (the forwarder's allows 900 s reads).
REQUEST_TIMEOUT: Final = ClientTimeout(total=120, sock_read=60)

Sleep = Callable[[float], Awaitable[None]]


class AdminApiError(Exception):
    """The Admin API could not be read; the message never contains the admin key."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class AdminClient:
    def __init__(
        self,
        session: ClientSession,
        upstream_url: str,
        admin_key: str,
        *,
        proxy: URL | None = None,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not admin_key or any(ch in admin_key for ch in "\r\n"):
            raise AdminApiError("the admin key is empty or not a single line")
        self._session = session
        self._target = UpstreamTarget.parse(upstream_url)
        self._key = admin_key
        self.fingerprint = key_fingerprint(admin_key)
        self._proxy = proxy
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock or (lambda: datetime.now(UTC))
        self.retries = 0  # how many answers were retried (429 / 5xx / connection errors)

    def scrub(self, text: str) -> str:
        """``text`` without the admin key (nor its visible halves), bounded."""
        cleaned = text.replace(self._key, self.fingerprint)
        if len(self._key) >= 16:
            cleaned = cleaned.replace(self._key[8:], "…").replace(self._key[:-8], "…")
        return cleaned[:MAX_ERROR_CHARS]

    async def _get(self, path: str, params: list[tuple[str, str]]) -> bytes:
        url = self._target.url_for(path, urlencode(params))
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        policy = self._policy
        for attempt in range(1, policy.max_attempts + 1):
            wait: float | None = None
            try:
                async with self._session.get(
                    url, headers=headers, proxy=self._proxy, timeout=REQUEST_TIMEOUT
                ) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        return body
                    if resp.status not in RETRY_STATUSES or attempt == policy.max_attempts:
                        raise AdminApiError(self._http_error(path, resp.status, body))
                    wait = retry_after_s(resp.headers.get("Retry-After"), self._clock())
            except (ClientError, TimeoutError) as exc:
                if attempt == policy.max_attempts:
                    raise AdminApiError(
                        self.scrub(f"Admin API {path}: {type(exc).__name__}: {exc}")
                    ) from None
            if wait is None:
                wait = policy.base_delay_s * 2 ** (attempt - 1)
            self.retries += 1
            await self._sleep(min(wait, policy.max_delay_s))
        raise AdminApiError(f"Admin API {path}: no answer")  # pragma: no cover (loop returns)

    def _http_error(self, path: str, status: int, body: bytes) -> str:
        message = ""
        try:
            data = parse_json(body)
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
        except AdminShapeError:
            pass
        hint = " (is OPENAI_ADMIN_KEY an sk-admin-... key of this organization?)"
        return self.scrub(
            f"Admin API {path}: HTTP {status}"
            + (f": {message}" if message else "")
            + (hint if status in (401, 403) else "")
            + f" [admin key {self.fingerprint}]"
        )

    async def pages(self, path: str, params: list[tuple[str, str]]) -> AsyncIterator[Page]:
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query = [*params, ("page", cursor)] if cursor else params
            body = await self._get(path, query)
            try:
                page = parse_page(body)
            except AdminShapeError as exc:
                raise AdminApiError(self.scrub(f"Admin API {path}: {exc}")) from None
            yield page
            if not page.has_more:
                return
            cursor = page.next_page
            if cursor is None or cursor in seen:
                raise AdminApiError(f"Admin API {path}: next_page repeats; stopped paging")
            seen.add(cursor)
        raise AdminApiError(f"Admin API {path}: more than {MAX_PAGES} pages; stopped paging")

    async def usage(self, source: str, start: int, end: int) -> list[UsageResult]:
        """``/v1/organization/usage/{source}`` per UTC day, grouped by project, model and key."""
        path = f"/v1/organization/usage/{source}"
        params = [
            ("start_time", str(start)),
            ("end_time", str(end)),
            ("bucket_width", "1d"),
            ("group_by", "project_id"),
            ("group_by", "model"),
            # by key too, so traffic that went around the proxy names the keys that carried it
            ("group_by", "api_key_id"),
            ("limit", str(USAGE_PAGE_LIMIT)),
        ]
        out: list[UsageResult] = []
        async for page in self.pages(path, params):
            for bucket in page.buckets:
                try:
                    out.extend(usage_results(source, bucket))
                except AdminShapeError as exc:
                    raise AdminApiError(self.scrub(f"Admin API {path}: {exc}")) from None
        return out

    async def costs(self, start: int, end: int) -> list[CostResult]:
        """``/v1/organization/costs`` per UTC day, grouped by project."""
        path = "/v1/organization/costs"
        params = [
            ("start_time", str(start)),
            ("end_time", str(end)),
            ("bucket_width", "1d"),
            ("group_by", "project_id"),
            ("limit", str(COSTS_PAGE_LIMIT)),
        ]
        out: list[CostResult] = []
        async for page in self.pages(path, params):
            for bucket in page.buckets:
                try:
                    out.extend(cost_results(bucket))
                except AdminShapeError as exc:
                    raise AdminApiError(self.scrub(f"Admin API {path}: {exc}")) from None
        return out
