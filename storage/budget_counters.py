"""Budget reservations shared by every replica, in PostgreSQL (issue 15).

One row per (team, period, period start) in ``budget_counters`` holds the period's settled spend
and the in-flight reservations of all replicas. Admitting a call is ONE statement: it adds the
call's reservation to every row of the team's blocking periods whose ``spent + reserved`` is still
below its limit (row locks make concurrent admissions from any replica see each other), records
the call in ``budget_inflight`` and returns each row's state, so the caller knows at once whether
all periods admitted it. Settling is one statement too: it removes the call's in-flight rows and
moves its reservation to the real cost. A replica killed mid-call leaves in-flight rows behind;
:meth:`SharedReservations.sweep` releases them once ``expires_at`` passed.

A period's row is created on its first call with the spend the ledger already holds for that
period (so adding this table mid-period, or a new team, starts from the truth).

The statements use PostgreSQL's data-modifying CTEs; SQLite (one process) keeps reservations in
memory instead (:class:`proxy.teams.budgets.BudgetTracker`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg
from sqlalchemy.engine import make_url

from storage.types import quantize_money

_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class Window:
    """One blocking period of a team: ``[start, end)`` and its limit."""

    start: datetime
    end: datetime
    limit: Decimal


@dataclass(frozen=True, slots=True)
class RowState:
    spent: Decimal
    reserved: Decimal
    admitted: bool


@dataclass(frozen=True, slots=True)
class Admission:
    """``rows``: the state of each period's row BEFORE this call (missing = no row yet)."""

    admitted: bool
    rows: Mapping[str, RowState]


def _windows_clause(
    prefix: str, periods: int, first: int, *, with_limit: bool, stride: int = 3
) -> str:
    """``(period = $a AND period_start = $b [AND spent + reserved < $c]) OR ...`` with window i's
    parameters at ``first + stride*i`` (period), ``+1`` (start), ``+2`` (limit, when stride 3)."""
    items = []
    for i in range(periods):
        n = first + stride * i
        item = f"({prefix}period = ${n}::varchar AND {prefix}period_start = ${n + 1}::timestamptz"
        if with_limit:
            item += f" AND {prefix}spent_usd + {prefix}reserved_usd < ${n + 2}::numeric"
        items.append(item + ")")
    return "(" + " OR ".join(items) + ")"


def _reserve_sql(periods: int) -> str:
    # $1 team, $2 call id, $3 amount, $4 expires, $5 now, then (period, start, limit) per window.
    return f"""
WITH c AS (
  UPDATE budget_counters
     SET reserved_usd = reserved_usd + $3::numeric, updated_at = $5::timestamptz
   WHERE team = $1::varchar AND {_windows_clause("", periods, 6, with_limit=True)}
  RETURNING period, period_start
), i AS (
  INSERT INTO budget_inflight (call_id, team, period, period_start, amount_usd, expires_at)
  SELECT $2::varchar, $1::varchar, c.period, c.period_start, $3::numeric, $4::timestamptz FROM c
)
SELECT b.period, b.spent_usd, b.reserved_usd,
       EXISTS (SELECT 1 FROM c WHERE c.period = b.period) AS admitted
  FROM budget_counters b
 WHERE b.team = $1::varchar AND {_windows_clause("b.", periods, 6, with_limit=False)}
"""


def _settle_sql(periods: int) -> str:
    # $1 team, $2 call id, $3 cost, $4 now, then (period, start) per window.
    return f"""
WITH d AS (
  DELETE FROM budget_inflight WHERE call_id = $2::varchar
  RETURNING period, period_start, amount_usd
)
UPDATE budget_counters b
   SET reserved_usd = b.reserved_usd - COALESCE(
         (SELECT SUM(d.amount_usd) FROM d
           WHERE d.period = b.period AND d.period_start = b.period_start), 0),
       spent_usd = b.spent_usd + $3::numeric,
       updated_at = $4::timestamptz
 WHERE b.team = $1::varchar AND {_windows_clause("b.", periods, 5, with_limit=False, stride=2)}
"""


_ENSURE_SQL: Final = """
INSERT INTO budget_counters (team, period, period_start, spent_usd, reserved_usd, updated_at)
SELECT $1::varchar, $2::varchar, $3::timestamptz, COALESCE(SUM(cost_usd), 0), 0, $5::timestamptz
  FROM usage_records
 WHERE team = $1::varchar AND started_at >= $3::timestamptz AND started_at < $4::timestamptz
   AND cost_usd IS NOT NULL
ON CONFLICT DO NOTHING
"""

_SWEEP_SQL: Final = """
WITH d AS (
  DELETE FROM budget_inflight WHERE expires_at < $1::timestamptz
  RETURNING team, period, period_start, amount_usd
), s AS (
  SELECT team, period, period_start, SUM(amount_usd) AS amount
    FROM d GROUP BY team, period, period_start
)
UPDATE budget_counters b SET reserved_usd = b.reserved_usd - s.amount, updated_at = $1::timestamptz
  FROM s
 WHERE b.team = s.team AND b.period = s.period AND b.period_start = s.period_start
"""


def _money(value: Decimal) -> Decimal:
    return quantize_money(value)


def _window_args(windows: Mapping[str, Window], *, with_limit: bool) -> list[Any]:
    args: list[Any] = []
    for period, window in windows.items():
        args += [period, window.start]
        if with_limit:
            args.append(_money(window.limit))
    return args


class SharedReservations:
    """The PostgreSQL side of budget admission. Each method is one round trip (``reserve`` adds
    one ``ensure`` per missing row, once per period).

    It talks to PostgreSQL through its own small asyncpg pool (no SQLAlchemy layer, no pre-ping:
    ~0.2 ms less per call than the engine's pool) with ``synchronous_commit = off`` (a commit does
    not wait for the WAL flush: 0.2-0.6 ms instead of several ms on a busy disk; see
    docs/performance.md). Each statement runs in its own implicit transaction.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_size: int = 8,
        connect_timeout_s: float = 1.0,
        command_timeout_s: float = 2.0,
    ) -> SharedReservations:
        """A store on the PostgreSQL database of ``url`` (as users write it); ``close`` it.

        Connections are opened on first use (``min_size=0``): an unreachable database at start
        is not an error here, each call fails fast instead (short timeouts: a budget check never
        holds a call for long) and the tracker admits in memory until the database answers."""
        parsed = make_url(url)
        if not parsed.get_backend_name().startswith("postgres"):
            raise ValueError("shared budget reservations need PostgreSQL")
        # asyncpg reads the DSN itself (host, port, password, sslmode, ...).
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=max_size,
            timeout=connect_timeout_s,
            command_timeout=command_timeout_s,
            # Reservations are short-lived state (the ledger is the record): a commit need not
            # wait for its WAL flush. Locks and visibility are unchanged (replicas still see each
            # other at once); a PostgreSQL crash may forget the last ~0.6 s of changes here.
            server_settings={"synchronous_commit": "off"},
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def reserve(
        self,
        team: str,
        call_id: str,
        amount: Decimal,
        windows: Mapping[str, Window],
        expires_at: datetime,
    ) -> Admission:
        """Reserve ``amount`` in every window or in none (a partial reservation is undone)."""
        rows = await self._try_reserve(team, call_id, amount, windows, expires_at)
        missing = [p for p in windows if p not in rows]
        if missing:
            if any(row.admitted for row in rows.values()):
                await self.settle(team, call_id, windows, _ZERO)
            await self._ensure(team, {p: windows[p] for p in missing})
            rows = await self._try_reserve(team, call_id, amount, windows, expires_at)
        complete = len(rows) == len(windows) and all(row.admitted for row in rows.values())
        if not complete and any(row.admitted for row in rows.values()):
            await self.settle(team, call_id, windows, _ZERO)
        return Admission(admitted=complete, rows=rows)

    async def _try_reserve(
        self,
        team: str,
        call_id: str,
        amount: Decimal,
        windows: Mapping[str, Window],
        expires_at: datetime,
    ) -> dict[str, RowState]:
        args = [team, call_id, _money(amount), expires_at, datetime.now(UTC)]
        args += _window_args(windows, with_limit=True)
        async with self._pool.acquire() as conn:
            records = await conn.fetch(_reserve_sql(len(windows)), *args)
        return {
            str(r["period"]): RowState(
                Decimal(r["spent_usd"]), Decimal(r["reserved_usd"]), bool(r["admitted"])
            )
            for r in records
        }

    async def settle(
        self, team: str, call_id: str, windows: Mapping[str, Window], cost: Decimal
    ) -> None:
        """Release the call's reservation (if any is still held) and add its real cost."""
        args = [team, call_id, _money(cost), datetime.now(UTC)]
        args += _window_args(windows, with_limit=False)
        async with self._pool.acquire() as conn:
            await conn.execute(_settle_sql(len(windows)), *args)

    async def sweep(self, now: datetime) -> None:
        """Release reservations whose call outlived ``expires_at`` (its replica died)."""
        async with self._pool.acquire() as conn:
            await conn.execute(_SWEEP_SQL, now)

    async def _ensure(self, team: str, windows: Mapping[str, Window]) -> None:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            for period, window in windows.items():
                await conn.execute(_ENSURE_SQL, team, period, window.start, window.end, now)
