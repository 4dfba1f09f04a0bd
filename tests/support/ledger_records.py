"""Building :class:`UsageRecord` values for ledger tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from storage.record import UsageRecord

BASE_TIME = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def make_record(n: int, **overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "id": f"rec-{n:09d}",
        "started_at": BASE_TIME + timedelta(seconds=n),
        "finished_at": BASE_TIME + timedelta(seconds=n, milliseconds=250),
        "method": "POST",
        "path": "/v1/chat/completions",
        "endpoint": "chat.completions",
        "status_code": 200,
        "outcome": "ok",
        "model": "gpt-4o-mini-2024-07-18",
        "team": "search",
        "input_tokens": 100 + n % 7,
        "output_tokens": 20 + n % 5,
        "usage_source": "reported",
        "cost_usd": Decimal("0.0000270000") + Decimal(n % 997).scaleb(-10),
        "price_ref": "openai:gpt-4o-mini@2024-07-18",
    }
    values.update(overrides)
    return UsageRecord(**values)


def random_cost(rng: random.Random) -> Decimal:
    """A cost with up to 10 decimal places, up to a few dollars."""
    return Decimal(rng.randrange(0, 50_000_000_000)).scaleb(-10)
