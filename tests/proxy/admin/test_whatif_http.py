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


async def test_an_empty_lever_or_an_unclear_savings_value_is_a_400_naming_it(
    tmp_path: Path,
) -> None:
    """``what_if=`` used to be ignored and ``savings=yes`` taken as yes: both answered a report the
    caller may not have asked for. Each is a 400 naming the parameter and what it takes, in the
    shape of an unknown parameter's 400."""
    async with seeded_product(tmp_path) as product, aiohttp.ClientSession(headers=AUTH) as client:
        base = f"{product.url}/meter/spend?{WINDOW}&by=team"
        for bad in (
            "what_if=",
            "what_if=%20",
            "what_if=,",
            "what_if=tier=batch,",
            "what_if=,tier=batch",
            "what_if=tier=batch,%20,model=gpt-4.1-nano",
            "what_if=tier=batch&what_if=",
        ):
            async with client.get(f"{base}&{bad}") as response:
                assert response.status == 400, bad
                error = (await response.json())["error"]
            assert (error["code"], error["param"]) == ("invalid_what_if", "what_if"), bad
            assert "what_if" in error["message"] and "model=MODEL" in error["message"]
            assert "tier=standard|batch|flex|priority" in error["message"]
            assert "\n" not in error["message"]
        for bad in ("yes", "no", "on", "off", "", "%201", "2", "y", "1,0", "true%00"):
            async with client.get(f"{base}&savings={bad}") as response:
                assert response.status == 400, bad
                error = (await response.json())["error"]
            assert (error["code"], error["param"]) == ("invalid_savings", "savings"), bad
            assert error["message"].startswith("savings must be 1 or 0 (or true/false)"), error
        async with client.get(f"{base}&savings=1&savings=0") as response:
            assert response.status == 400
            assert (await response.json())["error"]["param"] == "savings"
        # what stays accepted: 1/0/true/false in any case; levers with spaces around them
        for good, with_savings in (
            ("1", True),
            ("TRUE", True),
            ("true", True),
            ("0", False),
            ("False", False),
        ):
            async with client.get(f"{base}&savings={good}") as response:
                assert response.status == 200, good
                document = await response.json()
            assert ("savings" in document["total"]) is with_savings, good
        async with client.get(f"{base}&what_if=%20tier=batch%20,%20model=gpt-4.1-nano") as response:
            assert response.status == 200
            assert (await response.json())["what_if"] == ["tier=batch", "model=gpt-4.1-nano"]
