"""``openai_meter_savings_usd_total{model,team,kind}``: the reports' savings arithmetic, live."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing.book import PriceBook
from proxy.observe.savings import record_savings
from tests.proxy.observe.test_metrics import make, record, value

BOOK = PriceBook.load()
NAME = "openai_meter_savings_usd_total"


def test_cached_input_saving_is_the_full_input_price_minus_the_cached_one() -> None:
    metrics, registry = make(savings=record_savings(BOOK), canonical=BOOK.canonical)
    # gpt-4o-mini: 40 cached tokens x (0.15 - 0.075) / 1M = 0.000003
    metrics.submit(record())
    metrics.submit(record(id="r2"))
    got = value(registry, NAME, model="gpt-4o-mini", team="search", kind="cached_input")
    assert got == pytest.approx(0.000006)
    assert value(registry, NAME, model="gpt-4o-mini", team="search", kind="batch") is None


def test_batch_and_flex_savings_against_standard() -> None:
    metrics, registry = make(savings=record_savings(BOOK), canonical=BOOK.canonical)
    # 2M input x (0.15 - 0.075) + 500k output x (0.60 - 0.30) = 0.15 + 0.15
    metrics.submit(
        record(
            cached_input_tokens=0,
            input_tokens=2_000_000,
            output_tokens=500_000,
            reasoning_tokens=0,
            service_tier="batch",
            cost_usd=Decimal("0.30"),
        )
    )
    metrics.submit(
        record(
            id="r2",
            cached_input_tokens=0,
            input_tokens=1_000_000,
            output_tokens=0,
            reasoning_tokens=0,
            service_tier="flex",
            team="ads",
            cost_usd=Decimal("0.075"),
        )
    )
    assert value(registry, NAME, model="gpt-4o-mini", team="search", kind="batch") == 0.3
    assert value(registry, NAME, model="gpt-4o-mini", team="ads", kind="flex") == 0.075


def test_no_savings_series_for_ordinary_unpriced_or_unknown_calls() -> None:
    metrics, registry = make(savings=record_savings(BOOK), canonical=BOOK.canonical)
    metrics.submit(record(cached_input_tokens=0))
    metrics.submit(record(id="r2", cost_usd=None))
    metrics.submit(record(id="r3", model="brand-new", model_requested="brand-new"))
    metrics.submit(record(id="r4", service_tier="flex", model="no-such-model"))
    assert not [s for m in registry.collect() for s in m.samples if s.name == NAME]

    # and a failing savings function is a counted metering error, never an exception
    def broken(_: object) -> dict[str, Decimal]:
        raise RuntimeError("boom")

    metrics, registry = make(savings=broken)
    metrics.submit(record())
    assert value(registry, "openai_meter_metering_errors_total", stage="metrics") == 1.0
