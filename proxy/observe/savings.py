"""Savings already made by one finished call, for ``openai_meter_savings_usd_total{model,team,kind}``.

The same arithmetic as the reports (:func:`pricing.whatif.savings`), applied to a record as the
meter priced it. Only calls with cached input tokens or on the batch / flex tier can save anything;
:class:`proxy.observe.metrics.Metrics` calls this for those alone, so ordinary calls pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

from pricing.book import PriceBook
from pricing.usage import TOKEN_FIELDS, Usage
from pricing.whatif import Calls, savings
from storage.record import UsageRecord


def record_savings(book: PriceBook) -> Callable[[UsageRecord], Mapping[str, Decimal]]:
    """``record -> {kind: USD}`` (positive amounts only; nothing for unpriced calls)."""

    def of(record: UsageRecord) -> Mapping[str, Decimal]:
        if record.cost_usd is None:
            return {}
        usage = Usage(**{name: getattr(record, name) for name in TOKEN_FIELDS}, units=record.units)
        calls = Calls(
            usage=usage,
            model=record.model or record.model_requested,
            tier=record.service_tier,
            endpoint=record.endpoint,
            at=record.started_at,
        )
        return {kind: amount for kind, amount in savings(book, calls).items() if amount > 0}

    return of
