"""Fakes for the meter: a pricer with fixed per-token rates, exchanges, failing parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from pricing.cost import Cost
from pricing.usage import Usage
from proxy.http.endpoints import classify
from proxy.http.exchange import Exchange
from storage.record import UsageRecord

MILLION = Decimal(1_000_000)


@dataclass
class FakePricer:
    """input 1.00 / cached 0.10 / output 4.00 USD per 1M; per-unit 0.01; unknown models unpriced."""

    known: tuple[str, ...] = ("gpt-", "o3", "text-embedding", "dall-e", "tts-1", "whisper")
    calls: list[tuple[Usage, str | None, str | None, datetime]] = field(default_factory=list)

    def price(self, usage: Usage, model: str | None, tier: str | None, at: datetime) -> Cost:
        self.calls.append((usage, model, tier, at))
        if model is None or not model.startswith(self.known):
            return Cost(total=None, price_ref=None, unpriced_reason="unknown_model")
        uncached = usage.input_tokens - usage.cached_input_tokens
        total = (
            Decimal(uncached) * Decimal("1.00")
            + Decimal(usage.cached_input_tokens) * Decimal("0.10")
            + Decimal(usage.output_tokens) * Decimal("4.00")
        ) / MILLION
        total += sum(usage.units.values(), Decimal(0)) * Decimal("0.01")
        return Cost(total=total, price_ref=f"fake:{model}:{tier or 'default'}")


class RaisingPricer:
    def price(self, usage: Usage, model: str | None, tier: str | None, at: datetime) -> Cost:
        raise RuntimeError("price book exploded")


class RaisingSink:
    def submit(self, record: UsageRecord) -> None:
        raise RuntimeError("sink down")


@dataclass
class RecordingStage:
    refuse: bool = False
    records: list[UsageRecord] = field(default_factory=list)

    async def on_request(self, exchange: Exchange) -> web.StreamResponse | None:
        exchange.attribution.team = "search"
        if self.refuse:
            return web.json_response({"error": {"message": "budget"}}, status=429)
        return None

    def on_record(self, exchange: Exchange, record: UsageRecord) -> None:
        self.records.append(record)


def make_exchange(
    path: str,
    *,
    method: str = "POST",
    body: Any = None,
    raw_body: bytes | None = None,
    content_type: str = "application/json",
    query: str = "",
) -> Exchange:
    import orjson

    data = raw_body if raw_body is not None else (orjson.dumps(body) if body is not None else None)
    return Exchange(
        method=method,
        path=path,
        query_string=query,
        endpoint=classify(path),
        request_headers={},
        content_type=content_type if data is not None else "",
        request_body=data,
        upstream_body=data,
    )


def respond(exchange: Exchange, status: int = 200, content_type: str = "application/json") -> None:
    exchange.status_code = status
    exchange.response_content_type = content_type
    exchange.response_headers = {"Content-Type": content_type}
