"""The spend page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Signs in through the form, switches the window, reads the numbers off the rendered tables and
compares them with ``GET /meter/spend`` for the same window (exact decimals), checks that no
console error happens and that no request leaves 127.0.0.1, reads the tables with JavaScript off,
and saves a screenshot under the test's temporary directory. Playwright never downloads a browser
here: it is pointed at ``/usr/bin/chromium`` (``.ci/run`` installs the Debian package).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.support.spend_page import ADMIN_TOKEN, seeded_product

CHROMIUM = Path(os.environ.get("OPENAI_METER_CHROMIUM", "/usr/bin/chromium"))

pytestmark = pytest.mark.browser

if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
    if os.environ.get("OPENAI_METER_REQUIRE_CHROMIUM") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing (OPENAI_METER_REQUIRE_CHROMIUM=1)")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.async_api")


def number(text: str) -> Decimal:
    return Decimal(text.strip().replace("\N{MINUS SIGN}", "-"))


class Watch:
    """Console errors, page errors and every request that was not for 127.0.0.1."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.requests: list[str] = []

    async def route(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        if urlsplit(url).hostname != "127.0.0.1":
            self.outside.append(url)
            await route.abort()
            return
        await route.continue_()

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, chromium_sandbox=False
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def teams_on_page(page: Any) -> dict[str, tuple[int, Decimal]]:
    rows = await page.locator("#teams tbody tr[data-team]").all()
    out = {}
    for row in rows:
        team = await row.get_attribute("data-team")
        requests = int(await row.locator("td.requests").inner_text())
        cost = number(await row.locator("td.cost").inner_text())
        out[team] = (requests, cost)
    return out


async def spend_json(page: Any, base: str, **params: Any) -> dict[str, Any]:
    query = urlencode(params, doseq=True)
    response = await page.request.get(f"{base}/meter/spend?{query}")
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def window_of(page: Any) -> tuple[str, str]:
    strong = await page.locator("#window strong").all_inner_texts()
    return strong[0], strong[1]


async def test_sign_in_switch_window_and_numbers_match_the_json(
    browser: Any, tmp_path: Path
) -> None:
    async with seeded_product(tmp_path) as product:
        base = product.url
        watch = Watch()
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        await context.route("**/*", watch.route)
        page = await context.new_page()
        watch.attach(page)

        # Not signed in: the page sends the browser to the form.
        await page.goto(f"{base}/meter/")
        assert urlsplit(page.url).path == "/meter/login"

        # A wrong token is told plainly (and what was typed is not echoed back).
        await page.fill("#token", "not-the-token")
        await page.click("button[type=submit]")
        error = await page.locator("#signin-error").inner_text()
        assert "not the admin token" in error
        assert "not-the-token" not in await page.content()
        # the one console line allowed: Chromium logging the form's 401 answer itself
        assert [e for e in watch.errors if "status of 401" not in e] == []
        watch.errors.clear()

        await page.fill("#token", ADMIN_TOKEN)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#teams")
        assert urlsplit(page.url).path == "/meter/"
        cookies = await context.cookies()
        [cookie] = [c for c in cookies if c["name"] == "openai_meter_session"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["expires"] > 0
        assert ADMIN_TOKEN not in cookie["value"]

        # This month (the default) and then Today, each checked against /meter/spend.
        for preset in (None, "today"):
            if preset is not None:
                await page.click(f"a[data-window={preset}]")
                await page.wait_for_selector(f"a.current[data-window={preset}]")
            since, until = await window_of(page)
            document = await spend_json(page, base, since=since, until=until, by="team")
            expected = {
                row["team"]: (row["requests"], Decimal(row["cost_usd"])) for row in document["rows"]
            }
            assert await teams_on_page(page) == expected
            total = number(await page.locator("#total-cost").inner_text())
            assert total == Decimal(document["total"]["cost_usd"])
            assert (
                int(await page.locator("#total-requests").inner_text())
                == (document["total"]["requests"])
            )
        assert (since, until) == ("2025-06-10T00:00:00Z", "2025-06-10T20:00:00Z")

        # The what-if table against the JSON's what_if for the same window and levers.
        levers = ["model=gpt-4.1-nano", "tier=batch", "tier=flex"]
        document = await spend_json(page, base, since=since, until=until, by="team", what_if=levers)
        for row in document["rows"]:
            cells = page.locator(f"#what-if tbody tr[data-team='{row['team']}']")
            what_if = [number(t) for t in await cells.locator("td.what-if").all_inner_texts()]
            diffs = [number(t) for t in await cells.locator("td.difference").all_inner_texts()]
            assert what_if == [Decimal(row["what_if"][x]["cost_usd"]) for x in levers]
            assert diffs == [Decimal(row["what_if"][x]["difference_usd"]) for x in levers]

        # Dates form: the window of the o3 price cut.
        await page.fill("input[name=since]", "2025-06-09")
        await page.fill("input[name=until]", "2025-06-11")
        await page.click("form.dates button")
        await page.wait_for_selector("#teams")
        since, until = await window_of(page)
        assert (since, until) == ("2025-06-09T00:00:00Z", "2025-06-11T00:00:00Z")
        document = await spend_json(page, base, since=since, until=until, by="team")
        assert await teams_on_page(page) == {
            row["team"]: (row["requests"], Decimal(row["cost_usd"])) for row in document["rows"]
        }
        assert await teams_on_page(page) == {
            "search": (6, Decimal("0.49121")),
            "ads": (5, Decimal("0.3347")),
        }
        await page.wait_for_function(
            "document.getElementById('spend-chart').width > 0 && window.Chart !== undefined"
        )
        assert not await page.locator("p.nojs").is_visible()
        await page.screenshot(path=str(tmp_path / "spend-page.png"), full_page=True)

        html = await page.content()
        assert ADMIN_TOKEN not in html
        assert "sha256:0123456789ab" not in html  # key fingerprints are not the page's business

        # Sign out: the cookie is gone and the page asks again.
        await page.click("form.logout button")
        await page.wait_for_selector("#token")
        assert not [c for c in await context.cookies() if c["name"] == "openai_meter_session"]
        await page.goto(f"{base}/meter/")
        assert urlsplit(page.url).path == "/meter/login"

        assert watch.errors == []
        assert watch.outside == []
        assert any(u.endswith("/meter/static/chart.umd.min.js") for u in watch.requests)
        await context.close()
    if os.environ.get("OPENAI_METER_KEEP_SCREENSHOT"):
        shutil.copy(tmp_path / "spend-page.png", os.environ["OPENAI_METER_KEEP_SCREENSHOT"])


async def test_tables_work_with_javascript_off(browser: Any, tmp_path: Path) -> None:
    async with seeded_product(tmp_path) as product:
        base = product.url
        watch = Watch()
        context = await browser.new_context(java_script_enabled=False)
        await context.route("**/*", watch.route)
        page = await context.new_page()
        watch.attach(page)
        await page.goto(f"{base}/meter/login")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#teams")
        await page.click("a[data-window=today]")
        await page.wait_for_selector("a.current[data-window=today]")
        since, until = await window_of(page)
        response = await page.request.get(
            f"{base}/meter/spend?{urlencode({'since': since, 'until': until, 'by': 'team'})}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        document = await response.json()
        assert await teams_on_page(page) == {
            row["team"]: (row["requests"], Decimal(row["cost_usd"])) for row in document["rows"]
        }
        # the daily table is in the document (inside <details>), and the CSV link works
        assert await page.locator("#daily-table tbody tr").count() == 1
        assert await page.locator("p.nojs").is_visible()  # no empty chart boxes without JS
        assert not await page.locator(".chart-box").first.is_visible()
        href = await page.locator("#csv-link").get_attribute("href")
        csv = await page.request.get(f"{base}{href}")
        assert csv.status == 200
        assert (await csv.text()).startswith("team,model,requests")
        await page.screenshot(path=str(tmp_path / "spend-page-nojs.png"), full_page=True)
        if os.environ.get("OPENAI_METER_KEEP_SCREENSHOT"):
            shutil.copy(
                tmp_path / "spend-page-nojs.png",
                os.environ["OPENAI_METER_KEEP_SCREENSHOT"] + ".nojs.png",
            )
        assert watch.errors == []
        assert watch.outside == []
        await context.close()
