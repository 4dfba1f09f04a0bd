"""GET /meter/spend and GET /meter/records on a small app of their own over a SQLite ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.admin.admin_api import add_admin_routes
from storage.rows import RECORD_FIELDS
from tests.support.spend_ledger import at, ledger_with, make_record, november_records

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "reports"
CLOCK = at("2026-11-17T12:00:00Z")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for engine in ledger_with(tmp_path / "ledger.db", november_records()):
        app = web.Application()
        add_admin_routes(app, engine, clock=lambda: CLOCK)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as test_client:
            yield test_client


async def get_json(client: TestClient[Any, Any], url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status == status, await response.text()
    return orjson.loads(await response.read())


async def test_spend_json_matches_the_report(client: TestClient[Any, Any]) -> None:
    body = await get_json(client, "/meter/spend?by=team,model&since=2026-11-01&until=2026-12-01")
    assert body == orjson.loads((GOLDEN / "team_model.json").read_bytes())
    assert body["total"]["cost_usd"] == "1.2348380135"


async def test_spend_csv(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/meter/spend?by=team&by=model&since=2026-11-01&until=2026-12-01&format=csv"
    )
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert await response.text() == (GOLDEN / "team_model.csv").read_text()


async def test_spend_default_window_is_this_month_until_now(client: TestClient[Any, Any]) -> None:
    body = await get_json(client, "/meter/spend")
    assert (body["since"], body["until"]) == ("2026-11-01T00:00:00Z", "2026-11-17T12:00:00Z")
    assert body["total"]["requests"] == 3  # Nov 1, Nov 2, Nov 15


async def test_spend_relative_span_and_tag(client: TestClient[Any, Any]) -> None:
    body = await get_json(client, "/meter/spend?since=16d&by=tag:env")
    assert body["since"] == "2026-11-01T12:00:00Z"
    assert [(r["tag:env"], r["requests"]) for r in body["rows"]] == [("dev", 1), (None, 1)]


@pytest.mark.parametrize(
    "query",
    ["by=colour", "since=whenever", "format=xml", "since=2026-11-10&until=2026-11-01"],
)
async def test_spend_bad_parameters_get_openai_shaped_400(
    client: TestClient[Any, Any], query: str
) -> None:
    body = await get_json(client, f"/meter/spend?{query}", status=400)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


async def test_records_newest_first_with_ledger_columns(client: TestClient[Any, Any]) -> None:
    records = (await get_json(client, "/meter/records"))["records"]
    assert len(records) == 7
    starts = [r["started_at"] for r in records]
    assert starts == sorted(starts, reverse=True)
    assert set(records[0]) == set(RECORD_FIELDS)
    ads = next(r for r in records if r["model"] == "gpt-4o-2024-08-06")
    assert ads["cost_usd"] == "1.2345678901"  # exact string, never a float
    assert ads["started_at"] == "2026-11-15T08:30:00Z"
    unpriced = next(r for r in records if r["model"] == "brand-new-model")
    assert unpriced["cost_usd"] is None


async def test_records_filters_and_limit(client: TestClient[Any, Any]) -> None:
    two = (await get_json(client, "/meter/records?limit=2"))["records"]
    assert [r["started_at"] for r in two] == ["2026-12-01T00:00:00Z", "2026-11-30T12:00:00Z"]
    ads = (await get_json(client, "/meter/records?team=ads"))["records"]
    assert {r["team"] for r in ads} == {"ads"} and len(ads) == 2
    mini = await get_json(
        client, "/meter/records?model=gpt-4o-mini&since=2026-11-01&until=2026-12-01"
    )
    assert len(mini["records"]) == 2
    capped = (await get_json(client, "/meter/records?limit=100000"))["records"]
    assert len(capped) == 7


async def test_records_limit_is_capped_at_1000(tmp_path: Path) -> None:
    start = datetime.fromisoformat("2026-11-01T00:00:00+00:00")
    from datetime import timedelta

    records = [make_record(start + timedelta(seconds=i)) for i in range(1005)]
    async for engine in ledger_with(tmp_path / "big.db", records):
        app = web.Application()
        add_admin_routes(app, engine)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert len((await get_json(client, "/meter/records?limit=5000"))["records"]) == 1000
            assert len((await get_json(client, "/meter/records"))["records"]) == 100


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "since=nope"])
async def test_records_bad_parameters(client: TestClient[Any, Any], query: str) -> None:
    body = await get_json(client, f"/meter/records?{query}", status=400)
    assert body["error"]["type"] == "invalid_request_error"
