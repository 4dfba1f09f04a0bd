"""Fakes for budget tests: a settable clock and an in-memory 'ledger' spend source."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
from multidict import CIMultiDict

from proxy.http.exchange import Attribution, Exchange, RequestStage
from proxy.usage.dedupe import MemoryDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from proxy.usage.sinks import MemorySink
from storage.budget_counters import Admission, RowState, Window
from tests.support.usage_fakes import FakePricer


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class FakeLedger:
    """Rows (team, started_at, cost) as replicas would have written them; sums like the SQL."""

    rows: list[tuple[str, datetime, Decimal | None]] = field(default_factory=list)
    queries: int = 0
    fail: bool = False

    def add(self, team: str, started_at: datetime, cost: str | None) -> None:
        self.rows.append((team, started_at, Decimal(cost) if cost is not None else None))

    async def __call__(
        self, teams: Collection[str], windows: Mapping[str, datetime], until: datetime
    ) -> dict[str, dict[str, Decimal]]:
        self.queries += 1
        if self.fail:
            raise ConnectionError("database is down")
        out = {team: dict.fromkeys(windows, Decimal(0)) for team in teams}
        for team, started, cost in self.rows:
            if team not in out or cost is None or started >= until:
                continue
            for name, start in windows.items():
                if started >= start:
                    out[team][name] += cost
        return out


def metered_hooks(stages: Sequence[RequestStage], sink: MemorySink) -> UsageMeter:
    """The real meter with the fake pricer (in 1.00 / out 4.00 USD per 1M) and the given stages."""
    return UsageMeter(
        pricer=FakePricer(),
        sinks=[sink],
        encodings=Encodings(),
        dedupe=MemoryDedupe(),
        stages=stages,
    )


@dataclass
class FakeSharedStore:
    """An in-memory stand-in for ``storage.budget_counters.SharedReservations`` (one row per
    team and period start) that counts its round trips and can be made to fail."""

    rows: dict[tuple[str, str, datetime], list[Decimal]] = field(default_factory=dict)
    held: dict[str, list[tuple[str, datetime, Decimal]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail: bool = False
    swept: asyncio.Event = field(default_factory=asyncio.Event)

    async def reserve(
        self,
        team: str,
        call_id: str,
        amount: Decimal,
        windows: Mapping[str, Window],
        expires_at: datetime,
    ) -> Admission:
        self.calls.append("reserve")
        if self.fail:
            raise ConnectionError("database is down")
        states = {}
        for period, window in windows.items():
            spent, reserved = self.rows.setdefault(
                (team, period, window.start), [Decimal(0), Decimal(0)]
            )
            states[period] = RowState(spent, reserved, spent + reserved < window.limit)
        admitted = all(s.admitted for s in states.values())
        if admitted:
            for period, window in windows.items():
                self.rows[(team, period, window.start)][1] += amount
            self.held[call_id] = [(p, w.start, amount) for p, w in windows.items()]
        return Admission(admitted, states)

    async def settle(
        self, team: str, call_id: str, windows: Mapping[str, Window], cost: Decimal
    ) -> None:
        self.calls.append("settle")
        if self.fail:
            raise ConnectionError("database is down")
        for period, start, amount in self.held.pop(call_id, []):
            self.rows[(team, period, start)][1] -= amount
        for period, window in windows.items():
            row = self.rows.setdefault((team, period, window.start), [Decimal(0), Decimal(0)])
            row[0] += cost

    async def sweep(self, now: datetime) -> None:
        self.calls.append("sweep")
        self.swept.set()


def chat_exchange(team: str, max_tokens: int, model: str = "gpt-4o-mini") -> Exchange:
    """A chat completion request of ``team`` asking for up to ``max_tokens`` (as the meter
    leaves it before the stages run: body read and parsed, model known)."""
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "write"}],
    }
    exchange = Exchange(
        method="POST",
        path="/v1/chat/completions",
        query_string="",
        endpoint="chat.completions",
        request_headers=CIMultiDict({"Content-Type": "application/json"}),
        request_body=orjson.dumps(body),
        request_json=body,
        model_requested=model,
    )
    exchange.attribution = Attribution(team=team)
    return exchange
