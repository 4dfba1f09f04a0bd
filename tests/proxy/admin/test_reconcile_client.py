"""The Admin API client against the fake: paging, 429 Retry-After with bounded back-off, errors
that never carry the admin key, and the configured upstream's TLS settings / egress proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from aiohttp import ClientTimeout, web
from yarl import URL

from proxy.admin.reconcile.client import AdminApiError, AdminClient, retry_after_s
from proxy.http.upstream_session import open_upstream_session
from proxy.settings import UpstreamSettings
from proxy.teams.attribution import key_fingerprint
from tests.support.fake_admin_api import Billed, FakeAdminApi
from tests.support.loopback import serve_on_loopback

KEY = "sk-admin-" + "k3y" * 16
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
END = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp())


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def api() -> AsyncIterator[FakeAdminApi]:
    async with FakeAdminApi(admin_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(api: FakeAdminApi) -> AsyncIterator[tuple[AdminClient, Sleeps]]:
    sleeps = Sleeps()
    session = open_upstream_session(UpstreamSettings(url=api.url), ClientTimeout(total=30))
    async with session:
        yield AdminClient(session, api.url, KEY, sleep=sleeps, clock=lambda: NOW), sleeps


async def test_pages_through_every_bucket(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps]
) -> None:
    admin, _ = client
    for day in range(29):
        api.calls.append(
            Billed(
                at=datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(days=day),
                project_id="proj_a",
                model="gpt-4o-mini-2024-07-18",
                cost=Decimal("0.25"),
                counts={"input_tokens": day, "output_tokens": 1},
            )
        )
    usage = await admin.usage("completions", START, END)
    costs = await admin.costs(START, END)
    assert len(usage) == 29 and sum(r.counts["input_tokens"] for r in usage) == sum(range(29))
    assert sum(c.amount for c in costs) == Decimal("7.25")
    assert len([r for r in api.requests if r.path.endswith("/completions")]) == 15  # 2 a page
    for path in ("/v1/organization/costs", "/v1/organization/usage/completions"):
        cursors = [dict(r.query).get("page") for r in api.requests if r.path == path]
        assert cursors[0] is None and len(set(cursors)) == len(cursors)  # never repeated


async def test_429_waits_retry_after_then_succeeds(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps]
) -> None:
    admin, sleeps = client
    api.throttle(2, retry_after="7")
    assert await admin.costs(START, START + 86400) == []
    assert sleeps.waits == [7.0, 7.0] and admin.retries == 2


async def test_retry_after_is_capped_and_attempts_are_bounded(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps]
) -> None:
    admin, sleeps = client
    api.throttle(10, retry_after="86400")
    with pytest.raises(AdminApiError, match="HTTP 429"):
        await admin.costs(START, START + 86400)
    assert sleeps.waits == [60.0] * 4  # 5 attempts, each wait capped at 60 s


async def test_without_retry_after_the_back_off_doubles(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps]
) -> None:
    admin, sleeps = client
    api.throttle(3, retry_after="soon")
    await admin.costs(START, START + 86400)
    assert sleeps.waits == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("2.5", 2.5),
        ("Sun, 29 Nov 2026 10:00:30 GMT", 30.0),
        ("Sun, 29 Nov 2026 09:00:00 GMT", 0.0),
        ("", None),
        (None, None),
        ("nan", None),
        ("soon", None),
        ("\x00\xff", None),
    ],
)
def test_retry_after_forms(header: str | None, expected: float | None) -> None:
    assert retry_after_s(header, NOW) == expected


async def test_an_error_never_shows_the_key(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps]
) -> None:
    admin, _ = client
    api.fail(401, f"Incorrect API key provided: {KEY}. Also {KEY[:-8]}*** and ***{KEY[8:]}")
    with pytest.raises(AdminApiError) as caught:
        await admin.usage("completions", START, END)
    text = str(caught.value) + repr(caught.value)
    assert KEY not in text and KEY[9:40] not in text
    assert key_fingerprint(KEY) in text and "HTTP 401" in text


async def test_a_wrong_key_gets_the_fakes_401(api: FakeAdminApi) -> None:
    session = open_upstream_session(UpstreamSettings(url=api.url), ClientTimeout(total=30))
    async with session:
        admin = AdminClient(session, api.url, "sk-admin-other", sleep=Sleeps())
        with pytest.raises(AdminApiError, match="HTTP 401") as caught:
            await admin.costs(START, END)
    assert "sk-admin-other" not in str(caught.value)


async def test_5xx_is_retried_then_reported(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps]
) -> None:
    admin, sleeps = client
    api.fail(503, "overloaded")
    with pytest.raises(AdminApiError, match="HTTP 503: overloaded"):
        await admin.costs(START, END)
    assert len(sleeps.waits) == 4


@pytest.mark.parametrize("key", ["", "sk-admin-a\r\nX-Evil: 1", "sk-admin-\n"])
async def test_a_key_that_is_not_one_line_is_refused(key: str) -> None:
    with pytest.raises(AdminApiError) as caught:
        AdminClient(None, "http://127.0.0.1:9", key)  # type: ignore[arg-type]
    assert "X-Evil" not in str(caught.value)


async def _serve(routes: web.RouteTableDef) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    return runner, await serve_on_loopback(runner)


async def test_a_repeating_cursor_stops_paging() -> None:
    routes = web.RouteTableDef()

    @routes.get("/v1/organization/costs")
    async def costs(request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "page", "data": [], "has_more": True, "next_page": "same"}
        )

    runner, port = await _serve(routes)
    try:
        url = f"http://127.0.0.1:{port}"
        async with open_upstream_session(
            UpstreamSettings(url=url), ClientTimeout(total=30)
        ) as session:
            admin = AdminClient(session, url, KEY, sleep=Sleeps())
            with pytest.raises(AdminApiError, match="repeats"):
                await admin.costs(START, END)
    finally:
        await runner.cleanup()


async def test_a_non_json_answer_is_an_error_without_the_key() -> None:
    routes = web.RouteTableDef()

    @routes.get("/base/v1/organization/costs")  # the upstream URL's base path is kept
    async def costs(request: web.Request) -> web.Response:
        return web.Response(body=b"<html>" + KEY.encode() + b"</html>", content_type="text/html")

    runner, port = await _serve(routes)
    try:
        url = f"http://127.0.0.1:{port}/base"
        async with open_upstream_session(
            UpstreamSettings(url=url), ClientTimeout(total=30)
        ) as session:
            admin = AdminClient(session, url, KEY, sleep=Sleeps())
            with pytest.raises(AdminApiError, match="not JSON") as caught:
                await admin.costs(START, END)
        assert KEY not in str(caught.value)
    finally:
        await runner.cleanup()


async def test_the_request_goes_through_the_egress_proxy(api: FakeAdminApi) -> None:
    """A forward proxy on loopback sees the Admin API request (absolute-form, like HTTPS_PROXY)."""
    seen: list[str] = []
    routes = web.RouteTableDef()

    @routes.route("*", "/{tail:.*}")
    async def relay(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.json_response(
            {"object": "page", "data": [], "has_more": False, "next_page": None}
        )

    runner, port = await _serve(routes)
    try:
        async with open_upstream_session(
            UpstreamSettings(url="http://api.openai.invalid"), ClientTimeout(total=30)
        ) as session:
            admin = AdminClient(
                session,
                "http://api.openai.invalid",
                KEY,
                proxy=URL(f"http://127.0.0.1:{port}"),
                sleep=Sleeps(),
            )
            assert await admin.costs(START, END) == []
    finally:
        await runner.cleanup()
    assert seen and seen[0].startswith("http://api.openai.invalid/v1/organization/costs?")


@pytest.mark.parametrize("page_size", [1, 3, 31])
async def test_any_page_size_gives_the_same_results(
    api: FakeAdminApi, client: tuple[AdminClient, Sleeps], page_size: int
) -> None:
    admin, _ = client
    api.page_size = page_size
    for day in range(10):
        for project in ("a", "b"):
            api.calls.append(
                Billed(
                    at=datetime(2026, 11, 3, tzinfo=UTC) + timedelta(days=day, hours=1),
                    project_id=project,
                    model="m",
                    cost=Decimal("0.1"),
                    counts={"input_tokens": day},
                )
            )
    usage = await admin.usage("completions", START, END)
    costs = await admin.costs(START, END)
    assert len(usage) == 20 and sum(r.counts["input_tokens"] for r in usage) == 2 * sum(range(10))
    assert sum(c.amount for c in costs) == Decimal("2.0")
