"""``GET /meter/prices`` on a small app of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pricing.book import PriceBook
from proxy.admin.prices_api import PRICEBOOK_KEY, prices_handler


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


@pytest.fixture
async def client(book: PriceBook) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app[PRICEBOOK_KEY] = book
    app.router.add_get("/meter/prices", prices_handler)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_one_model_as_of_a_date(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get(
        "/meter/prices", params={"model": "ft:gpt-4.1-2025-04-14:acme::x", "at": "2026-01-15"}
    )
    assert response.status == 200
    data = await response.json()
    assert data["at"] == "2026-01-15"
    [item] = data["prices"]
    assert item["model"] == "gpt-4.1"
    assert item["fine_tuned"]["tiers"]["standard"]["output"] == "12"
    assert item["tiers"]["priority"]["cached_input"] == "0.875"
    assert isinstance(item["tiers"]["standard"]["input"], str)  # money as decimal strings


async def test_all_models(
    client: TestClient[web.Request, web.Application], book: PriceBook
) -> None:
    response = await client.get("/meter/prices")
    data = await response.json()
    assert {item["model"] for item in data["prices"]} >= {"gpt-4o-mini", "dall-e-3", "whisper-1"}
    dalle = next(i for i in data["prices"] if i["model"] == "dall-e-3")
    assert dalle["tiers"]["standard"]["per_image"]["hd:1024x1792"] == "0.12"


async def test_unknown_model_is_404_in_openai_error_shape(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/meter/prices", params={"model": "gpt-4o-mini-search-preview"})
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "model_not_priced" and error["param"] == "model"


async def test_bad_date_is_400(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/meter/prices", params={"at": "31/12/2025"})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "at"
