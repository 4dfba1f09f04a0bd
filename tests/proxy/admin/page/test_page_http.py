"""The spend page over plain HTTP: sign-in, cookie, CSRF refusal, static files, headers, secrets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin import session
from proxy.admin.page.data import places_for, preset_window
from tests.support.product import Product
from tests.support.spend_page import ADMIN_TOKEN, NOW, seeded_product

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def product(tmp_path: Path) -> AsyncIterator[Product]:
    async with seeded_product(tmp_path) as running:
        yield running


async def get(url: str, **kwargs: object) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.get(url, allow_redirects=False, **kwargs) as response,  # type: ignore[arg-type]
    ):
        return response.status, dict(response.headers), await response.text()


async def post_login(url: str, token: str, **headers: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        response = await client.post(
            f"{url}/meter/login", data={"token": token}, headers=headers, allow_redirects=False
        )
        await response.read()
        return response


async def test_the_page_needs_the_token_or_the_cookie(product: Product) -> None:
    status, headers, _ = await get(f"{product.url}/meter/")
    assert (status, headers["Location"]) == (303, "/meter/login")
    status, _, _ = await get(f"{product.url}/meter/", headers={"Authorization": "Bearer wrong"})
    assert status == 303
    status, headers, body = await get(f"{product.url}/meter/", headers=BEARER)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert ADMIN_TOKEN not in body
    assert "<script>" not in body  # no inline script (the CSP would refuse it anyway)
    # JSON endpoints still answer 401 (not a redirect) without credentials
    status, _, _ = await get(f"{product.url}/meter/spend")
    assert status == 401


async def test_sign_in_sets_a_strict_signed_cookie_that_opens_every_meter_route(
    product: Product,
) -> None:
    response = await post_login(product.url, ADMIN_TOKEN, Origin=product.url)
    assert response.status == 303
    assert response.headers["Location"] == "/meter/"
    raw = response.headers["Set-Cookie"]
    assert "HttpOnly" in raw
    assert "SameSite=Strict" in raw
    assert "Path=/meter" in raw
    assert "Max-Age=43200" in raw
    value = response.cookies[session.COOKIE_NAME].value
    assert ADMIN_TOKEN not in value
    cookie = {"Cookie": f"{session.COOKIE_NAME}={value}"}
    for path in ("/meter/", "/meter/spend", "/meter/records", "/meter/prices"):
        status, _, _ = await get(f"{product.url}{path}", headers=cookie)
        assert status == 200, path
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    status, _, _ = await get(
        f"{product.url}/meter/spend", headers={"Cookie": f"{session.COOKIE_NAME}={tampered}"}
    )
    assert status == 401


async def test_a_wrong_token_is_told_plainly_and_not_echoed(product: Product) -> None:
    for wrong in ("nope", "", ADMIN_TOKEN + " ", ADMIN_TOKEN[:-1], "é" * 50, "x" * 20_000):
        response = await post_login(product.url, wrong, Origin=product.url)
        if wrong == ADMIN_TOKEN + " ":
            assert response.status == 303  # surrounding blanks from a paste are ignored
            continue
        assert response.status in (401, 413)
        assert "Set-Cookie" not in response.headers
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{product.url}/meter/login", data={"token": "nope"}) as response,
    ):
        body = await response.text()
    assert response.status == 401
    assert "That is not the admin token" in body
    assert "nope" not in body


async def test_cross_site_sign_in_posts_are_refused(product: Product) -> None:
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Sec-Fetch-Site": "cross-site", "Origin": product.url},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://[::1"},
    ):
        response = await post_login(product.url, ADMIN_TOKEN, **headers)
        assert response.status == 403, headers
        assert "Set-Cookie" not in response.headers
    ok = await post_login(product.url, ADMIN_TOKEN, **{"Sec-Fetch-Site": "same-origin"})
    assert ok.status == 303


async def test_logout_deletes_the_cookie(product: Product) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.post(
            f"{product.url}/meter/logout", headers={"Origin": product.url}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/meter/login"
            assert f'{session.COOKIE_NAME}=""' in response.headers["Set-Cookie"]
        async with client.post(
            f"{product.url}/meter/logout", headers={"Origin": "http://evil.example"}
        ) as refused:
            assert refused.status == 403


async def test_meter_without_the_slash_redirects_to_the_page_which_still_needs_the_token(
    product: Product,
) -> None:
    status, headers, body = await get(f"{product.url}/meter")
    assert (status, headers["Location"], body) == (308, "/meter/", "")
    status, headers, _ = await get(f"{product.url}/meter/")  # the target asks for the token
    assert (status, headers["Location"]) == (303, "/meter/login")
    # the query string goes along as it was sent (percent-encoded), never as a new target
    for query in (
        "window=7d",
        "what_if=tier%3Dbatch&window=last-month",
        "x=%0d%0aSet-Cookie:a",
        "x=//evil.example",
    ):
        status, headers, _ = await get(f"{product.url}/meter?{query}")
        assert status == 308, query
        assert headers["Location"].lower() == f"/meter/?{query}".lower()  # %0d or %0D
        assert "Set-Cookie" not in headers
    status, headers, _ = await get(f"{product.url}/v1/%2e%2e/meter")  # resolved to /meter first
    assert (status, headers.get("Location")) == (308, "/meter/")
    async with aiohttp.ClientSession(
        headers=BEARER
    ) as client:  # followed, with the token: the page
        async with client.get(f"{product.url}/meter") as response:
            assert response.status == 200
            assert str(response.url).endswith("/meter/")
            assert "text/html" in response.headers["Content-Type"]
        async with client.head(f"{product.url}/meter", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (308, "/meter/")
        async with client.post(f"{product.url}/meter", allow_redirects=False) as response:
            assert response.status == 405


async def test_meter_without_the_slash_redirects_when_the_page_is_open(tmp_path: Path) -> None:
    async with seeded_product(tmp_path, token=None) as running:
        status, headers, _ = await get(f"{running.url}/meter")
        assert (status, headers["Location"]) == (308, "/meter/")


async def test_static_files_are_public_and_nothing_else_is(product: Product) -> None:
    status, headers, body = await get(f"{product.url}/meter/static/chart.umd.min.js")
    assert status == 200
    assert headers["Content-Type"].startswith("application/javascript")
    assert body.startswith("/*!\n * Chart.js v4.6.1")
    assert "sourceMappingURL" not in body
    status, _, licence = await get(f"{product.url}/meter/static/chart.js-LICENSE.md")
    assert status == 200 and "MIT License" in licence
    for name in ("../views.py", "..%2fviews.py", "page.html.j2", "nope.js", "%00"):
        status, _, _ = await get(f"{product.url}/meter/static/{name}")
        assert status in (403, 404), name
    status, _, _ = await get(f"{product.url}/meter/login")
    assert status == 200


async def test_page_loads_only_its_own_files(product: Product) -> None:
    _, _, body = await get(f"{product.url}/meter/", headers=BEARER)
    sources = re.findall(r'(?:src|href)="([^"]*)"', body)
    assert sources
    for source in sources:
        assert source.startswith(("/meter/", "data:")), source


@pytest.mark.parametrize(
    "query",
    [
        "window=yesterday",
        "since=garbage",
        "since=2025-06-10&until=2025-06-01",
        "what_if=tier=cheap",
        "what_if=model=no-such",
    ],
)
async def test_bad_page_parameters_are_a_400_page(product: Product, query: str) -> None:
    status, headers, body = await get(f"{product.url}/meter/?{query}", headers=BEARER)
    assert status == 400
    assert headers["Content-Type"].startswith("text/html")
    assert "<script" not in body.split("</main>")[0].split("<main>")[1]


async def test_user_text_is_escaped(product: Product) -> None:
    status, _, body = await get(
        f"{product.url}/meter/?what_if=model=<script>alert(1)</script>", headers=BEARER
    )
    assert status == 400
    assert "<script>alert(1)" not in body
    assert "&lt;script&gt;" in body


async def test_without_a_token_the_page_is_open(tmp_path: Path) -> None:
    async with seeded_product(tmp_path, token=None) as running:
        status, _, body = await get(f"{running.url}/meter/")
        assert status == 200
        assert "Sign out" not in body
        status, _, body = await get(f"{running.url}/meter/login")
        assert "No admin token is configured" in body


async def test_last_month_window_and_empty_page(product: Product) -> None:
    status, _, body = await get(f"{product.url}/meter/?window=last-month", headers=BEARER)
    assert status == 200
    assert "2025-05-01T00:00:00Z" in body and "2025-06-01T00:00:00Z" in body
    assert "No calls in this window." in body


# ---------------------------------------------------------------- pure parts


def test_presets() -> None:
    assert preset_window("today", NOW).since == datetime(2025, 6, 10, tzinfo=UTC)
    assert preset_window("7d", NOW).since == NOW - timedelta(days=7)
    assert preset_window("month", NOW).since == datetime(2025, 6, 1, tzinfo=UTC)
    january = datetime(2026, 1, 15, tzinfo=UTC)
    last = preset_window("last-month", january)
    assert (last.since, last.until) == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_places_show_every_amount_exactly() -> None:
    assert places_for([Decimal("0.5"), Decimal("12")]) == 6
    assert places_for([Decimal("0.0000001234")]) == 10
    assert places_for([Decimal("1E+3"), Decimal("-0.00000005")]) == 8


@given(st.text(max_size=300))
def test_cookie_check_refuses_anything_it_did_not_sign(value: str) -> None:
    assert session.valid(value, ADMIN_TOKEN, NOW) is False


def test_cookie_expires_and_is_bound_to_the_token() -> None:
    value, max_age = session.issue(ADMIN_TOKEN, NOW)
    assert max_age == 12 * 3600
    assert session.valid(value, ADMIN_TOKEN, NOW)
    assert session.valid(value, ADMIN_TOKEN, NOW + timedelta(hours=11, minutes=59))
    assert not session.valid(value, ADMIN_TOKEN, NOW + timedelta(hours=12))
    assert not session.valid(value, ADMIN_TOKEN + "x", NOW)
    version, expiry, signature = value.split(".")
    later = f"{version}.{int(expiry) + 3600}.{signature}"
    assert not session.valid(later, ADMIN_TOKEN, NOW)  # the expiry is signed
    assert not session.valid(value + "=", ADMIN_TOKEN, NOW)
    assert not session.valid(f"v1.{'9' * 300}.{signature}", ADMIN_TOKEN, NOW)
    assert session.valid(session.issue("tökën\udcff", NOW)[0], "tökën\udcff", NOW)


async def test_rejected_records_are_counted_per_team(product: Product) -> None:
    from storage.engine import create_engine
    from storage.schema import ledger_rejected

    _, _, before = await get(f"{product.url}/meter/", headers=BEARER)
    row = before.split('<tr data-team="ads">')[1].split("</tr>")[0]
    assert '<td class="rejected">0</td>' in row
    engine = create_engine(product.settings.database.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                ledger_rejected.insert(),
                {
                    "record_id": "rej-1",
                    "row": "{}",
                    "error": "refused",
                    "first_seen_at": NOW,
                    "retries": 0,
                    "started_at": NOW - timedelta(hours=1),
                    "team": "ads",
                },
            )
    finally:
        await engine.dispose()
    _, _, after = await get(f"{product.url}/meter/", headers=BEARER)
    assert "Rejected records" in after
    row = after.split('<tr data-team="ads">')[1].split("</tr>")[0]
    assert '<td class="rejected">1</td>' in row


async def test_odd_sign_in_bodies_are_a_plain_refusal(product: Product) -> None:
    bodies: list[tuple[bytes, str]] = [
        (b"token=\xff\xfe%ZZ", "application/x-www-form-urlencoded"),
        (b"", "application/x-www-form-urlencoded"),
        (b'{"token": "x"}', "application/json"),
        (b"token=" + ADMIN_TOKEN.encode() + b"&token=again", "application/x-www-form-urlencoded"),
        (b"\x00" * 1000, "application/octet-stream"),
    ]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        for body, content_type in bodies:
            async with client.post(
                f"{product.url}/meter/login",
                data=body,
                headers={"Content-Type": content_type},
                allow_redirects=False,
            ) as response:
                assert response.status in (303, 401), body[:20]
                if response.status == 303:  # the first token field is the one read
                    assert body.startswith(b"token=" + ADMIN_TOKEN.encode())
