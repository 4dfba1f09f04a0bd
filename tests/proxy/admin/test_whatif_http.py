"""``GET /meter/spend?what_if=…&savings=1``: same figures as the CLI, bad levers are a 400."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import aiohttp

from tests.support.spend_page import ADMIN_TOKEN, seeded_product
from tests.support.whatif_ledger import EXPECTED_WHAT_IF

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WINDOW = "since=2025-06-09&until=2025-06-11"


async def test_what_if_and_savings_over_http(tmp_path: Path) -> None:
    async with seeded_product(tmp_path) as product, aiohttp.ClientSession(headers=AUTH) as client:
        base = f"{product.url}/meter/spend?{WINDOW}&by=team"
        url = f"{base}&what_if=tier=batch&what_if=model=gpt-4.1-nano,tier=priority&savings=1"
        async with client.get(url) as response:
            assert response.status == 200
            document = await response.json()
        assert document["what_if"] == ["tier=batch", "model=gpt-4.1-nano", "tier=priority"]
        rows = {row["team"]: row for row in document["rows"]}
        for lever in document["what_if"]:
            for team, (cost, actual, difference, repriced, reasons) in EXPECTED_WHAT_IF[
                lever
            ].items():
                got = rows[team]["what_if"][lever]
                assert Decimal(got["cost_usd"]) == Decimal(cost)
                assert Decimal(got["actual_usd"]) == Decimal(actual)
                assert Decimal(got["difference_usd"]) == Decimal(difference)
                assert (got["repriced_requests"], got["not_repriced"]) == (repriced, reasons)
        assert Decimal(document["total"]["savings"]["total_usd"]) == Decimal("0.324")

        async with client.get(f"{base}&what_if=tier=flex&format=csv") as response:
            text = await response.text()
        assert response.headers["Content-Type"].startswith("text/csv")
        assert "what_if[tier=flex].cost_usd" in text.splitlines()[0]
        async with client.get(f"{base}&savings=1&format=table") as response:
            assert "savings already made" in await response.text()

        # without what_if / savings the answer is the plain report
        async with client.get(base) as response:
            plain = await response.json()
        assert "what_if" not in plain and "savings" not in plain["total"]

        for bad in (
            "what_if=tier=cheap",
            "what_if=model=nope",
            "what_if=x",
            "savings=maybe",
            "what_if=" + "model=gpt-4o," * 20,
        ):
            async with client.get(f"{base}&{bad}") as response:
                assert response.status == 400, bad
                error = (await response.json())["error"]
                assert error["code"] in ("invalid_what_if", "invalid_savings")
