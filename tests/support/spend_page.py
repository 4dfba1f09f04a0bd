"""The whole product over a seeded ledger (the what-if records), with an admin token and budgets,
at a fixed clock inside June 2025: for the spend page's HTTP and browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from storage.ledger import write_batch
from tests.support.product import Product
from tests.support.spend_ledger import migrated_engine
from tests.support.whatif_ledger import whatif_records

ADMIN_TOKEN = "adm-Secret-Token-0123456789"
NOW = datetime(2025, 6, 10, 20, 0, tzinfo=UTC)
TEAMS = {
    "search": {
        "keys": ["sha256:0123456789ab"],
        "budget": {"daily_usd": "0.05", "monthly_usd": "2"},
    },
    "ads": {"keys": ["sha256:ba9876543210"], "budget": {"monthly_usd": "0.5"}},
}


@asynccontextmanager
async def seeded_product(
    tmp_path: Path, *, token: str | None = ADMIN_TOKEN
) -> AsyncIterator[Product]:
    engine = await migrated_engine(tmp_path / "l.db")
    try:
        await write_batch(engine, whatif_records())
    finally:
        await engine.dispose()
    product = Product(
        "http://127.0.0.1:9",
        tmp_path,
        clock=lambda: NOW,
        admin={"token": token},
        teams=TEAMS,
        budgets={"timezone": "Europe/Paris"},
    )
    async with product:
        yield product
