"""Fakes for budget tests: a settable clock and an in-memory 'ledger' spend source."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from proxy.http.exchange import RequestStage
from proxy.usage.dedupe import MemoryDedupe
from proxy.usage.encodings import Encodings
from proxy.usage.meter import UsageMeter
from proxy.usage.sinks import MemorySink
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
