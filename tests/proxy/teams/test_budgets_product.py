"""Budget reservations through the whole product (``create_app``) with the official SDK.

The issue's scenarios (limit $1.50/day; gpt-4o at $2.50 / $10.00 per 1M tokens, so a call asking
for ``max_tokens=15000`` and using it all costs $0.15003): spend after the crossing is at most the
reservations of the calls in flight at the crossing. On SQLite (one process, reservations in
memory) and with three app instances on one PostgreSQL (reservations shared in one row).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from proxy.teams.attribution import key_fingerprint
from tests.support.fake_upstream import FakeUpstream, FakeUsage
from tests.support.product import Product, ledger_rows, share_encodings

KEY = "sk-budget-product-test"
LIMIT = Decimal("1.50")
EXPENSIVE = FakeUsage(input_tokens=12, output_tokens=15_000)  # $0.15003
CHEAP = FakeUsage(input_tokens=12, output_tokens=1)  # $0.00004
MESSAGES = [{"role": "user", "content": "write"}]
# The most one expensive call may reserve: 15000 x $10/1M + its body (< 400 bytes) x $2.50/1M.
MAX_RESERVATION = Decimal("0.15") + Decimal(400) * Decimal("2.5") / 1_000_000


@pytest.fixture(autouse=True)
def _encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    share_encodings(monkeypatch)


@pytest.fixture
async def upstream() -> FakeUpstream:
    async with FakeUpstream(model="gpt-4o-2024-08-06") as fake:
        yield fake  # type: ignore[misc]


def budget_sections(database_url: str | None = None) -> dict[str, dict[str, object]]:
    sections: dict[str, dict[str, object]] = {
        "teams": {"search": {"keys": [key_fingerprint(KEY)], "budget": {"daily_usd": str(LIMIT)}}}
    }
    if database_url is not None:
        sections["database"] = {"url": database_url}
    return sections


async def sequential(product: Product, upstream: FakeUpstream, usage: FakeUsage, n: int) -> None:
    upstream.usage = usage
    client = product.sdk(KEY)
    for _ in range(n):
        await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=usage.output_tokens
        )


async def burst(products: list[Product], upstream: FakeUpstream, calls: int) -> int:
    """``calls`` streams of $0.15 at once, spread over ``products``, all held in flight until
    every admission was decided; returns how many were admitted."""
    upstream.usage = EXPENSIVE
    upstream.hold = asyncio.Event()
    clients = [p.sdk(KEY) for p in products]

    async def start(i: int) -> openai.AsyncStream[object] | None:
        try:
            return await clients[i % len(clients)].chat.completions.create(  # type: ignore[return-value]
                model="gpt-4o", messages=MESSAGES, max_tokens=15_000, stream=True
            )
        except openai.RateLimitError as error:
            assert error.code == "budget_exceeded"
            return None

    streams = await asyncio.gather(*(start(i) for i in range(calls)))
    upstream.hold.set()
    for stream in streams:
        if stream is not None:
            async for _ in stream:
                pass
    return sum(s is not None for s in streams)


def spend(rows: list[dict[str, object]]) -> Decimal:
    return sum((Decimal(str(r["cost_usd"])) for r in rows if r["team"] == "search"), Decimal(0))


async def test_teaching_cheap_calls_then_a_burst_sqlite(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """9 calls at $0.15, 20 near-free, then 100 concurrent $0.15 (was: all 100, $16.35)."""
    async with Product(upstream.url, tmp_path, **budget_sections()) as product:
        await sequential(product, upstream, EXPENSIVE, 9)
        await sequential(product, upstream, CHEAP, 20)
        admitted = await burst([product], upstream, 100)
    rows = await ledger_rows(product.settings.database.url)
    spent = spend(rows)
    assert admitted == 1
    assert LIMIT <= spent <= LIMIT + admitted * MAX_RESERVATION
    assert sum(r["outcome"] == "refused" for r in rows) == 99
    assert len(upstream.requests) == 9 + 20 + 1  # refused calls never reached the upstream


async def test_a_team_whose_only_call_was_tiny_sqlite(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """One tiny call, then 100 concurrent $0.15 calls (was: 100 of 100 admitted, $15.00)."""
    async with Product(upstream.url, tmp_path, **budget_sections()) as product:
        await sequential(product, upstream, CHEAP, 1)
        admitted = await burst([product], upstream, 100)
    spent = spend(await ledger_rows(product.settings.database.url))
    assert admitted == 10  # 10 reservations of ~$0.1503 cover $1.50
    assert LIMIT <= spent <= LIMIT + MAX_RESERVATION


@pytest.mark.postgres
async def test_three_instances_on_one_postgres_share_the_reservations(
    upstream: FakeUpstream, tmp_path: Path, postgres_url: str
) -> None:
    """Before: each replica saw the others' spend ~3 s late (two replicas let ~22 calls past a
    limit). Now every admission is one statement on the team's shared row: across the three
    instances exactly the 10 calls that fit are admitted."""
    sections = budget_sections(postgres_url)
    products = [
        Product(
            upstream.url,
            tmp_path / name,
            ledger={"spool_dir": str(tmp_path / name / "spool"), "flush_interval_ms": 20},
            **sections,
        )
        for name in ("a", "b", "c")
    ]
    for product in products:
        await product.start()
    try:
        await sequential(products[0], upstream, CHEAP, 1)
        admitted = await burst(products, upstream, 90)
    finally:
        for product in products:
            await product.stop()
    spent = spend(await ledger_rows(postgres_url))
    assert admitted == 10
    assert LIMIT <= spent <= LIMIT + MAX_RESERVATION
