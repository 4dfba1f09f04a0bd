"""``GET /meter/records`` (tag filter, cursor pages, limit clamp) and unknown query parameters on
``/meter/records`` and ``/meter/spend`` (a 400 that names them)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from pricing.book import PriceBook
from proxy.admin.admin_api import RECORDS_PARAMETERS, SPEND_PARAMETERS, add_admin_routes
from proxy.admin.cursor import CursorError, decode_cursor, encode_cursor
from proxy.admin.prices_api import PRICEBOOK_KEY
from tests.support.spend_ledger import at, ledger_with, make_record, november_records

CLOCK = at("2026-11-17T12:00:00Z")
START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for engine in ledger_with(tmp_path / "ledger.db", november_records()):
        app = web.Application()
        app[PRICEBOOK_KEY] = PriceBook.load()  # what_if / savings re-price with it
        add_admin_routes(app, engine, clock=lambda: CLOCK)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as test_client:
            yield test_client


async def get_json(client: TestClient[Any, Any], url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status == status, await response.text()
    return orjson.loads(await response.read())


# -- unknown parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/meter/records", "/meter/spend"])
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("tem=search", ["tem"]),
        ("team=search&tem=x&limt=5", ["limt", "tem"]),
        ("TEAM=search", ["TEAM"]),  # names are case-sensitive
        ("%FF%FE=1", ["\ufffd\ufffd"]),
    ],
)
async def test_unknown_parameters_are_a_400_naming_them(
    client: TestClient[Any, Any], endpoint: str, query: str, named: list[str]
) -> None:
    body = await get_json(client, f"{endpoint}?{query}", status=400)
    error = body["error"]
    assert error["code"] == "unknown_parameter"
    assert error["param"] == named[0]
    for name in named:
        assert repr(name) in error["message"]


async def test_unknown_parameter_names_are_bounded_in_the_message(
    client: TestClient[Any, Any],
) -> None:
    query = "&".join(f"{'x' * 150}{n}=1" for n in range(45))
    body = await get_json(client, f"/meter/records?{query}", status=400)
    assert len(body["error"]["message"]) < 2000


async def test_every_documented_parameter_is_accepted(client: TestClient[Any, Any]) -> None:
    values = {
        "limit": "5",
        "since": "2026-11-01",
        "until": "2026-12-01",
        "team": "ads",
        "model": "gpt-4o-mini",
        "tag": "env=prod",
        "cursor": encode_cursor(CLOCK, "rec-x"),
    }
    assert set(values) == RECORDS_PARAMETERS
    await get_json(
        client, "/meter/records?" + "&".join(f"{k}={quote(v)}" for k, v in values.items())
    )
    spend = {
        "since": "7d",
        "until": "now",
        "by": "team",
        "format": "json",
        "team": "a",
        "model": "m",
        "what_if": "tier=batch",
        "savings": "1",
    }
    assert set(spend) == SPEND_PARAMETERS
    await get_json(client, "/meter/spend?" + "&".join(f"{k}={v}" for k, v in spend.items()))


# -- tag filter -----------------------------------------------------------------------------------


async def test_tag_filter(client: TestClient[Any, Any]) -> None:
    prod = (await get_json(client, "/meter/records?tag=env=prod"))["records"]
    assert len(prod) == 2 and all(r["tags"]["env"] == "prod" for r in prod)
    dev = (await get_json(client, "/meter/records?tag=env%3Ddev"))["records"]
    assert [r["tags"] for r in dev] == [{"env": "dev"}]
    conflict = await get_json(client, "/meter/records?tag=env=prod&tag=env=dev", status=400)
    assert conflict["error"]["code"] == "invalid_report_parameter"
    same_twice = await get_json(client, "/meter/records?tag=env=prod&tag=env=prod")
    assert len(same_twice["records"]) == 2


@pytest.mark.parametrize(
    "value",
    ["", "env", "=prod", "env=", "bad key=1", "env=a\x01", "k=" + "v" * 500, "env=prod,env=dev"],
)
async def test_bad_tag_filters_are_400(client: TestClient[Any, Any], value: str) -> None:
    body = await get_json(client, f"/meter/records?tag={quote(value)}", status=400)
    assert body["error"]["type"] == "invalid_request_error"


# -- cursor pages ---------------------------------------------------------------------------------


async def test_cursor_pages_walk_every_record_once(tmp_path: Path) -> None:
    records = [make_record(START + timedelta(seconds=n // 3), team="t") for n in range(25)]
    async for engine in ledger_with(tmp_path / "l.db", records):
        app = web.Application()
        add_admin_routes(app, engine)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            everything = await get_json(client, "/meter/records?limit=1000")
            assert everything["next"] is None
            seen: list[str] = []
            url = "/meter/records?team=t&limit=4"
            while True:
                body = await get_json(client, url)
                assert body["limit"] == 4 and len(body["records"]) <= 4
                seen.extend(r["id"] for r in body["records"])
                if body["next"] is None:
                    break
                url = f"/meter/records?team=t&limit=4&cursor={body['next']}"
            assert seen == [r["id"] for r in everything["records"]]
            assert len(set(seen)) == 25


async def test_limit_above_1000_is_clamped_and_next_reaches_the_rest(tmp_path: Path) -> None:
    records = [make_record(START + timedelta(seconds=i)) for i in range(1005)]
    async for engine in ledger_with(tmp_path / "big.db", records):
        app = web.Application()
        add_admin_routes(app, engine)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            first = await get_json(client, "/meter/records?limit=100000")
            assert (len(first["records"]), first["limit"]) == (1000, 1000)
            assert first["next"]
            rest = await get_json(client, f"/meter/records?limit=100000&cursor={first['next']}")
            assert len(rest["records"]) == 5 and rest["next"] is None
            ids = [r["id"] for r in first["records"] + rest["records"]]
            assert sorted(ids) == sorted(r.id for r in records)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "x",
        "not base64!",
        "W10",
        encode_cursor(CLOCK, "a")[:-3],
        "A" * 600,
        # a forged moment before the first representable UTC instant (was a 500)
        base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+01:00","x"]').decode().rstrip("="),
    ],
)
async def test_bad_cursors_are_400(client: TestClient[Any, Any], cursor: str) -> None:
    body = await get_json(client, f"/meter/records?cursor={quote(cursor)}", status=400)
    assert body["error"]["code"] == "invalid_cursor"
    assert body["error"]["param"] == "cursor"


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_times_at_the_edge_of_the_calendar_are_400(
    client: TestClient[Any, Any], since: str
) -> None:
    for path in ("/meter/spend", "/meter/records"):
        await get_json(client, f"{path}?since={quote(since)}", status=400)


@given(
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)),
    st.text(min_size=1, max_size=100),
)
def test_cursor_round_trips(moment: datetime, record_id: str) -> None:
    assert decode_cursor(encode_cursor(moment, record_id)) == (moment, record_id)


@given(st.text(max_size=700))
def test_decoding_any_text_is_a_cursor_or_a_cursor_error(token: str) -> None:
    with contextlib.suppress(CursorError):
        decode_cursor(token)


@given(st.binary(max_size=300))
def test_decoding_any_bytes_as_a_token_is_a_cursor_or_a_cursor_error(raw: bytes) -> None:
    import base64

    with contextlib.suppress(CursorError):
        decode_cursor(base64.urlsafe_b64encode(raw).decode())
