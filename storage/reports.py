"""Read-side ledger queries for reports, ``/meter/records`` and budgets.

Every sum runs in SQL on exact types (``Money``: integer units on SQLite, NUMERIC on PostgreSQL),
so nothing here ever sees a float. Spend is attributed to the window by ``started_at``
(``since <= started_at < until``), the same rule the daily rollup uses.

When a report only groups by rollup keys (team, model, service_tier, endpoint, day, month) over
whole UTC days, it reads ``usage_daily`` (a few rows per day) instead of scanning calls.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, String, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.rows import row_to_public
from storage.schema import usage_daily, usage_records

TAG_PREFIX: Final = "tag:"
_ROLLUP_DIMENSIONS: Final = frozenset({"team", "model", "service_tier", "endpoint", "day", "month"})
_RECORD_COLUMNS: Final = frozenset(
    {
        "team",
        "model",
        "project",
        "organization",
        "user",
        "endpoint",
        "service_tier",
        "key_fingerprint",
    }
)


@dataclass(frozen=True, slots=True)
class SpendQuery:
    since: datetime
    until: datetime
    by: tuple[str, ...]  # team, model, ..., day, month, tag:KEY (validated by the caller)
    team: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class SpendGroup:
    """One aggregated group: ``group`` values in ``by`` order (None = not set / no such tag)."""

    group: tuple[str | None, ...]
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    unpriced_requests: int
    estimated_requests: int


def _is_midnight(moment: datetime) -> bool:
    return moment.astimezone(UTC).timetz().replace(tzinfo=None) == time(0)


def uses_rollup(query: SpendQuery) -> bool:
    return (
        set(query.by) <= _ROLLUP_DIMENSIONS
        and _is_midnight(query.since)
        and _is_midnight(query.until)
    )


async def spend(engine: AsyncEngine, query: SpendQuery) -> list[SpendGroup]:
    """Aggregated spend; groups may repeat when ``month`` is derived from days (merge them)."""
    statement, keys = (
        _rollup_statement(query) if uses_rollup(query) else _records_statement(query, engine)
    )
    async with engine.connect() as conn:
        result = await conn.execute(statement)
        rows = result.mappings().all()
    return [_to_group(row, query.by, keys) for row in rows]


def _day_expression(engine: AsyncEngine) -> ColumnElement[str]:
    column = usage_records.c.started_at
    if engine.dialect.name == "sqlite":
        # Stored as a naive UTC ISO string: its first 10 characters are the UTC date.
        return func.substr(column, 1, 10, type_=String)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD", type_=String)


def _sums(table: Any, *, rollup: bool) -> list[ColumnElement[Any]]:
    c = table.c
    if rollup:
        return [
            func.sum(c.requests).label("requests"),
            *(
                func.sum(c[name]).label(name)
                for name in (
                    "input_tokens",
                    "cached_input_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                )
            ),
            func.sum(c.cost_usd).label("cost_usd"),
            func.sum(c.unpriced_requests).label("unpriced_requests"),
            func.sum(c.estimated_requests).label("estimated_requests"),
        ]
    return [
        func.count().label("requests"),
        *(
            func.sum(c[name]).label(name)
            for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
        ),
        func.sum(c.cost_usd).label("cost_usd"),
        func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unpriced_requests"),
        func.sum(case((c.usage_source == "estimated", 1), else_=0)).label("estimated_requests"),
    ]


def _records_statement(query: SpendQuery, engine: AsyncEngine) -> tuple[Select[Any], list[str]]:
    c = usage_records.c
    dims: list[ColumnElement[Any]] = []
    keys: list[str] = []
    for index, dim in enumerate(query.by):
        key = f"g{index}"
        if dim in ("day", "month"):
            expression: ColumnElement[Any] = _day_expression(engine)
        elif dim.startswith(TAG_PREFIX):
            expression = c.tags[dim[len(TAG_PREFIX) :]].as_string()
        elif dim in _RECORD_COLUMNS:
            expression = c[dim]
        else:
            raise ValueError(f"unknown dimension {dim!r}")
        dims.append(expression.label(key))
        keys.append(key)
    conditions = [c.started_at >= query.since, c.started_at < query.until]
    if query.team is not None:
        conditions.append(c.team == query.team)
    if query.model is not None:
        conditions.append(c.model == query.model)
    statement = select(*dims, *_sums(usage_records, rollup=False)).where(and_(*conditions))
    if dims:
        statement = statement.group_by(*(dim for dim in dims))
    return statement, keys


def _rollup_statement(query: SpendQuery) -> tuple[Select[Any], list[str]]:
    c = usage_daily.c
    dims: list[ColumnElement[Any]] = []
    keys: list[str] = []
    for index, dim in enumerate(query.by):
        key = f"g{index}"
        column = c.day if dim in ("day", "month") else c[dim]
        dims.append(column.label(key))
        keys.append(key)
    conditions = [
        c.day >= query.since.astimezone(UTC).date(),
        c.day < query.until.astimezone(UTC).date(),
    ]
    if query.team is not None:
        conditions.append(c.team == query.team)
    if query.model is not None:
        conditions.append(c.model == query.model)
    statement = select(*dims, *_sums(usage_daily, rollup=True)).where(and_(*conditions))
    if dims:
        statement = statement.group_by(*dims)
    return statement, keys


def _group_value(dim: str, value: Any) -> str | None:
    if value is None:
        return None
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if dim == "month":
        return text[:7]
    if dim == "day":
        return text[:10]
    if dim in ("model", "service_tier") and text == "":
        return None  # the rollup stores a missing model / tier as ''
    return text


def _to_group(row: Mapping[str, Any], by: Sequence[str], keys: Sequence[str]) -> SpendGroup:
    def count(name: str) -> int:
        value = row[name]
        return int(value) if value is not None else 0

    cost = row["cost_usd"]
    return SpendGroup(
        group=tuple(_group_value(dim, row[key]) for dim, key in zip(by, keys, strict=True)),
        requests=count("requests"),
        input_tokens=count("input_tokens"),
        cached_input_tokens=count("cached_input_tokens"),
        output_tokens=count("output_tokens"),
        reasoning_tokens=count("reasoning_tokens"),
        cost_usd=cost if cost is not None else Decimal(0),
        unpriced_requests=count("unpriced_requests"),
        estimated_requests=count("estimated_requests"),
    )


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RecordsQuery:
    limit: int = 100
    since: datetime | None = None
    until: datetime | None = None
    team: str | None = None
    model: str | None = None


async def fetch_records(engine: AsyncEngine, query: RecordsQuery) -> list[dict[str, Any]]:
    """Ledger rows, newest first, with the ledger's column names (money as Decimal)."""
    c = usage_records.c
    conditions: list[ColumnElement[bool]] = []
    if query.since is not None:
        conditions.append(c.started_at >= query.since)
    if query.until is not None:
        conditions.append(c.started_at < query.until)
    if query.team is not None:
        conditions.append(c.team == query.team)
    if query.model is not None:
        conditions.append(c.model == query.model)
    statement = (
        select(usage_records)
        .where(and_(*conditions))
        .order_by(c.started_at.desc(), c.id.desc())
        .limit(query.limit)
    )
    async with engine.connect() as conn:
        result = await conn.execute(statement)
        return [row_to_public(row._asdict()) for row in result.all()]


# ---------------------------------------------------------------- budgets


async def spent_by_team(
    engine: AsyncEngine,
    teams: Collection[str],
    windows: Mapping[str, datetime],
    until: datetime,
) -> dict[str, dict[str, Decimal]]:
    """Priced spend per team for several windows ``[start, until)`` in ONE round trip.

    ``windows`` maps a name (``daily``, ``monthly``) to its start. Teams or windows with no
    spend come back as ``Decimal(0)``.
    """
    out = {team: dict.fromkeys(windows, Decimal(0)) for team in teams}
    if not teams or not windows:
        return out
    c = usage_records.c
    earliest = min(windows.values())
    sums = [
        func.sum(case((c.started_at >= start, c.cost_usd), else_=None)).label(f"w{index}")
        for index, start in enumerate(windows.values())
    ]
    statement = (
        select(c.team, *sums)
        .where(c.team.in_(list(teams)), c.started_at >= earliest, c.started_at < until)
        .group_by(c.team)
    )
    async with engine.connect() as conn:
        result = await conn.execute(statement)
        for row in result.mappings().all():
            for index, name in enumerate(windows):
                value = row[f"w{index}"]
                if value is not None:
                    out[row["team"]][name] = value
    return out
