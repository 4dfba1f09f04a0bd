"""Ledger reads for what-if re-pricing and savings: the calls of a window, grouped for pricing.

Re-pricing needs each call's usage, model, tier, endpoint and day, never just the window's sums.
To stay fast on big windows without losing a digit, calls that price *linearly* are summed in SQL per
(report group, model, service_tier, endpoint, price span): for them the price of the sum is exactly
the sum of the prices (see :meth:`pricing.book.PriceBook.price_sum`). A price span is the time
between two of the catalog's change days (``PriceBook.change_days``, passed in as ``boundaries``):
inside one every lookup answers the same, so its calls are priced as of the span's first instant. A call is linear when it bills no
``units``, its token subsets fit inside its totals, and its input stays at or under the catalog's
smallest long-context threshold. Every other priced call comes back one by one, and unpriced calls
(``cost_usd`` NULL) come back counted per reason: they are never re-priced (no actual to compare).

Groups are keyed like :func:`storage.queries.spend` (same ``by`` names, same ``None`` for missing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.queries import COLUMN_DIMENSIONS, DIMENSIONS, TAG_PREFIX, _day_text
from storage.schema import TOKEN_COLUMNS, ledger_rejected, usage_records


@dataclass(frozen=True, slots=True)
class CallGroup:
    """Calls of one report group priced the same way (one call unless ``summed``)."""

    group: tuple[str | None, ...]
    model: str | None
    service_tier: str | None
    endpoint: str
    at: datetime  # the call's start; UTC midnight of the day for summed calls
    count: int
    tokens: Mapping[str, int]
    units: Mapping[str, Decimal]
    cost_usd: Decimal | None  # the ledger's (summed) cost; None: unpriced
    unpriced_reason: str | None
    summed: bool


def _key(dim: str, dialect: str) -> ColumnElement[Any]:
    c = usage_records.c
    if dim == "day":
        return _day_text(dialect, 10)
    if dim == "month":
        return _day_text(dialect, 7)
    if dim.startswith(TAG_PREFIX):
        tag: ColumnElement[Any] = c.tags[dim[len(TAG_PREFIX) :]].as_string()
        return tag
    column_: ColumnElement[Any] = c[dim]
    return column_


def _linear(long_floor: int | None) -> ColumnElement[bool]:
    c = usage_records.c
    parts: list[ColumnElement[bool]] = [
        cast(c.units, String) == "{}",
        c.input_tokens
        >= c.cached_input_tokens
        + c.cache_write_tokens
        + c.audio_input_tokens
        + c.image_input_tokens,
        c.output_tokens >= c.audio_output_tokens + c.image_output_tokens,
    ]
    if long_floor is not None:
        parts.append(c.input_tokens <= long_floor)
    return and_(*parts)


def _validate(by: Sequence[str], filters: Mapping[str, str]) -> None:
    for dim in by:
        if dim not in DIMENSIONS and not dim.startswith(TAG_PREFIX):
            raise ValueError(f"cannot group by {dim!r}")
    for key in filters:
        if key not in COLUMN_DIMENSIONS:
            raise ValueError(f"cannot filter by {key!r}")


def _window(
    stmt: Select[Any], since: datetime, until: datetime, filters: Mapping[str, str]
) -> Select[Any]:
    c = usage_records.c
    stmt = stmt.where(c.started_at >= since, c.started_at < until)
    for key, value in filters.items():
        stmt = stmt.where(c[key] == value)
    return stmt


async def call_groups(
    engine: AsyncEngine,
    *,
    since: datetime,
    until: datetime,
    by: Sequence[str] = (),
    filters: Mapping[str, str] | None = None,
    long_floor: int | None = None,
    per_call: bool = False,
    boundaries: Sequence[datetime] | None = None,
) -> list[CallGroup]:
    """Every call in ``[since, until)`` exactly once: summed where linear (unless ``per_call``,
    e.g. when a discount rounds per call), one by one where not, unpriced ones counted per reason."""
    by = tuple(by)
    filters = dict(filters or {})
    _validate(by, filters)
    if since >= until:
        return []
    c = usage_records.c
    out: list[CallGroup] = []
    async with engine.connect() as conn:
        dialect = conn.dialect.name
        keys = [_key(dim, dialect).label(f"k{i}") for i, dim in enumerate(by)]
        linear = _linear(long_floor) if not per_call else false()
        # Price spans inside the window; without boundaries, one span per UTC day (always exact).
        if boundaries is None:
            span: ColumnElement[Any] = _day_text(dialect, 10)
            starts: list[datetime] = []
        else:
            starts = [since, *sorted(b for b in boundaries if since < b < until)]
            span = (
                case(
                    *((c.started_at < b, index) for index, b in enumerate(starts[1:])),
                    else_=len(starts) - 1,
                )
                if len(starts) > 1
                else literal(0)
            )
        day = span.label("span")
        shape = [c.model, c.service_tier, c.endpoint]
        unpriced = c.cost_usd.is_(None)
        summed_stmt = select(
            *keys,
            *shape,
            day,
            unpriced.label("unpriced"),
            case((unpriced, c.unpriced_reason), else_=None).label("reason"),
            func.count().label("calls"),
            *(func.sum(c[name]).label(name) for name in TOKEN_COLUMNS),
            func.sum(c.cost_usd).label("cost_usd"),
        ).where(or_(unpriced, linear))
        summed_stmt = _window(summed_stmt, since, until, filters).group_by(
            *keys, *shape, day, unpriced, case((unpriced, c.unpriced_reason), else_=None)
        )
        for row in (await conn.execute(summed_stmt)).mappings():
            if boundaries is None:
                moment = datetime.fromisoformat(str(row["span"])).replace(tzinfo=UTC)
            else:
                moment = starts[int(row["span"])]
            out.append(
                CallGroup(
                    group=tuple(_text(row[f"k{i}"]) for i in range(len(by))),
                    model=row["model"],
                    service_tier=row["service_tier"],
                    endpoint=row["endpoint"],
                    at=moment,
                    count=int(row["calls"]),
                    tokens={name: int(row[name] or 0) for name in TOKEN_COLUMNS},
                    units={},
                    cost_usd=row["cost_usd"],
                    unpriced_reason=row["reason"],
                    summed=True,
                )
            )
        single_stmt = select(
            *keys, *shape, c.started_at, *(c[n] for n in TOKEN_COLUMNS), c.units, c.cost_usd
        ).where(not_(unpriced), not_(linear))
        single_stmt = _window(single_stmt, since, until, filters)
        for row in (await conn.execute(single_stmt)).mappings():
            out.append(
                CallGroup(
                    group=tuple(_text(row[f"k{i}"]) for i in range(len(by))),
                    model=row["model"],
                    service_tier=row["service_tier"],
                    endpoint=row["endpoint"],
                    at=row["started_at"],
                    count=1,
                    tokens={name: int(row[name]) for name in TOKEN_COLUMNS},
                    units=_units(row["units"]),
                    cost_usd=row["cost_usd"],
                    unpriced_reason=None,
                    summed=False,
                )
            )
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _units(raw: Any) -> dict[str, Decimal]:
    return {str(k): Decimal(str(v)) for k, v in (raw or {}).items()}


def iter_groups(groups: Sequence[CallGroup]) -> Iterator[tuple[str | None, ...]]:
    """The distinct report groups, in first-seen order."""
    seen: set[tuple[str | None, ...]] = set()
    for item in groups:
        if item.group not in seen:
            seen.add(item.group)
            yield item.group


async def rejected_counts(
    engine: AsyncEngine, since: datetime, until: datetime
) -> dict[str | None, int]:
    """Dead-lettered records (``ledger_rejected``, not in the ledger's rows) started in
    ``[since, until)``, per team (``None``: the team could not be read from the record)."""
    c = ledger_rejected.c
    stmt = (
        select(c.team, func.count())
        .where(c.started_at >= since, c.started_at < until)
        .group_by(c.team)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return {None if team is None else str(team): int(n) for team, n in rows}
