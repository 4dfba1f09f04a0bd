"""Read side of the ledger for reports, ``/meter/records`` and budgets.

* :func:`fetch_records` -- raw rows, newest first, as dicts with the ledger's column names
  (filters, tag filters, keyset pagination).
* :func:`spend` -- totals grouped by any of :data:`DIMENSIONS`. Whole UTC days come from the
  ``usage_daily`` rollup when every grouping/filter is one the rollup keeps; partial days at the
  window's edges, and groupings the rollup does not keep (project, user, tag:KEY, ...), come from
  raw rows. Both paths give the same numbers; money is exact :class:`Decimal`.
* :func:`spent` -- one team's cost over ``[since, until)``, for budgets.
* :func:`has_tables` / :func:`sqlite_has_tables` -- whether a database holds the ledger's tables at
  all (the commands that only read the ledger ask before reading).

``since`` is inclusive, ``until`` exclusive; both aware datetimes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from sqlalchemy import ColumnElement, Select, and_, case, func, inspect, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.rows import row_to_public
from storage.schema import TOKEN_COLUMNS, usage_daily, usage_records

TAG_PREFIX: Final = "tag:"
COLUMN_DIMENSIONS: Final[tuple[str, ...]] = (
    "team",
    "model",
    "project",
    "organization",
    "user",
    "endpoint",
    "service_tier",
    "key_fingerprint",
)
DIMENSIONS: Final[tuple[str, ...]] = (*COLUMN_DIMENSIONS, "day", "month")  # + "tag:KEY"
ROLLUP_COLUMNS: Final = frozenset({"team", "model", "service_tier", "endpoint"})
METRICS: Final[tuple[str, ...]] = (
    "requests",
    *TOKEN_COLUMNS,
    "cost_usd",
    "unpriced_requests",
    "estimated_requests",
)
MAX_RECORDS: Final = 1000

Group = tuple[str | None, ...]


async def fetch_records(
    engine: AsyncEngine,
    *,
    limit: int = 100,
    since: datetime | None = None,
    until: datetime | None = None,
    team: str | None = None,
    model: str | None = None,
    tags: Mapping[str, str] | None = None,
    before: tuple[datetime, str] | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows newest first by ``(started_at, id)`` (at most ``MAX_RECORDS + 1``, so a caller
    can tell whether a page has a successor); money as Decimal, times aware UTC.

    ``tags``: every key must have exactly that value. ``before``: only rows strictly before this
    ``(started_at, id)`` key in that order (keyset pagination: stable under concurrent inserts).
    """
    limit = max(0, min(limit, MAX_RECORDS + 1))
    stmt = select(usage_records)
    if since is not None:
        stmt = stmt.where(usage_records.c.started_at >= since)
    if until is not None:
        stmt = stmt.where(usage_records.c.started_at < until)
    if team is not None:
        stmt = stmt.where(usage_records.c.team == team)
    if model is not None:
        stmt = stmt.where(usage_records.c.model == model)
    for key, value in (tags or {}).items():
        stmt = stmt.where(usage_records.c.tags[key].as_string() == value)
    if before is not None:
        moment, record_id = before
        stmt = stmt.where(
            or_(
                usage_records.c.started_at < moment,
                and_(usage_records.c.started_at == moment, usage_records.c.id < record_id),
            )
        )
    stmt = stmt.order_by(usage_records.c.started_at.desc(), usage_records.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    return [row_to_public(row) for row in rows]


async def has_tables(engine: AsyncEngine, names: Sequence[str]) -> list[bool]:
    """Whether the database has each of these tables, e.g. the ledger's ``usage_records`` (a read:
    creates nothing but the connection; for SQLite see :func:`sqlite_has_tables`)."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: [inspect(sync).has_table(n) for n in names])


def sqlite_has_tables(path: Path, names: Sequence[str]) -> list[bool]:
    """:func:`has_tables` for an existing SQLite file, opened read-only with no engine: an engine's
    connection would set WAL mode, writing a header into an empty file or changing a foreign
    database. Raises ``sqlite3.DatabaseError`` for a file that is not a database."""
    uri = f"file:{quote(str(path))}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        found = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    return [name in found for name in names]


async def spend(
    engine: AsyncEngine,
    *,
    since: datetime,
    until: datetime,
    by: Sequence[str] = (),
    filters: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One dict per group: the ``by`` keys (``str | None``; day ``YYYY-MM-DD``, month ``YYYY-MM``)
    and every name in :data:`METRICS`. Unordered; groups with no rows are absent."""
    by = tuple(by)
    filters = dict(filters or {})
    for dim in by:
        if dim not in DIMENSIONS and not dim.startswith(TAG_PREFIX):
            raise ValueError(f"cannot group by {dim!r}")
    for key in filters:
        if key not in COLUMN_DIMENSIONS:
            raise ValueError(f"cannot filter by {key!r}")
    if since >= until:
        return []
    totals: dict[Group, dict[str, Any]] = {}
    rollup_ok = all(d in ROLLUP_COLUMNS or d in ("day", "month") for d in by) and all(
        k in ROLLUP_COLUMNS for k in filters
    )
    first_day = _ceil_day(since)
    last_day = _floor_day(until)
    async with engine.connect() as conn:
        if rollup_ok and first_day < last_day:
            stmt = _rollup_query(by, filters, first_day, last_day)
            for row in (await conn.execute(stmt)).mappings():
                _merge(totals, by, row, from_rollup=True)
            edges = [(since, _midnight(first_day)), (_midnight(last_day), until)]
        else:
            edges = [(since, until)]
        for start, end in edges:
            if start < end:
                stmt = _raw_query(by, filters, start, end, conn.dialect.name)
                for row in (await conn.execute(stmt)).mappings():
                    _merge(totals, by, row, from_rollup=False)
    return [{**dict(zip(by, group, strict=True)), **values} for group, values in totals.items()]


async def spent(engine: AsyncEngine, team: str, since: datetime, until: datetime) -> Decimal:
    """Priced cost of ``team`` in ``[since, until)`` (unpriced calls add nothing)."""
    rows = await spend(engine, since=since, until=until, filters={"team": team})
    return rows[0]["cost_usd"] if rows else Decimal(0)


# ---------------------------------------------------------------- internals


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _floor_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _ceil_day(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    day = moment.date()
    return day if moment == _midnight(day) else day + timedelta(days=1)


def _metric_columns(table: Any, *, raw: bool) -> list[ColumnElement[Any]]:
    if raw:
        c = usage_records.c
        return [
            func.count().label("requests"),
            *(func.sum(c[name]).label(name) for name in TOKEN_COLUMNS),
            func.sum(c.cost_usd).label("cost_usd"),
            func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unpriced_requests"),
            func.sum(case((c.usage_source == "estimated", 1), else_=0)).label("estimated_requests"),
        ]
    return [func.sum(table.c[name]).label(name) for name in METRICS]


def _rollup_query(
    by: tuple[str, ...], filters: Mapping[str, str], first: date, end: date
) -> Select[Any]:
    c = usage_daily.c
    keys: list[ColumnElement[Any]] = []
    for dim in by:
        if dim in ("day", "month"):
            if not any(k.key == "day" for k in keys):
                keys.append(c.day)
        else:
            keys.append(c[dim])
    stmt = select(*keys, *_metric_columns(usage_daily, raw=False)).where(
        c.day >= first, c.day < end
    )
    for key, value in filters.items():
        stmt = stmt.where(c[key] == value)
    return stmt.group_by(*keys) if keys else stmt


def _raw_query(
    by: tuple[str, ...], filters: Mapping[str, str], start: datetime, end: datetime, dialect: str
) -> Select[Any]:
    c = usage_records.c
    keys: list[ColumnElement[Any]] = []
    for index, dim in enumerate(by):
        if dim == "day":
            expr = _day_text(dialect, 10)
        elif dim == "month":
            expr = _day_text(dialect, 7)
        elif dim.startswith(TAG_PREFIX):
            expr = c.tags[dim[len(TAG_PREFIX) :]].as_string()
        else:
            expr = c[dim]
        keys.append(expr.label(f"k{index}"))
    stmt = select(*keys, *_metric_columns(usage_records, raw=True)).where(
        and_(c.started_at >= start, c.started_at < end)
    )
    for key, value in filters.items():
        stmt = stmt.where(c[key] == value)
    return stmt.group_by(*keys) if keys else stmt


def utc_day_text(dialect: str, length: int = 10) -> ColumnElement[Any]:
    """``started_at`` as UTC ``YYYY-MM-DD`` (length 10) or ``YYYY-MM`` (7) text, per backend."""
    return _day_text(dialect, length)


def _day_text(dialect: str, length: int) -> ColumnElement[Any]:
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
        return func.substr(usage_records.c.started_at, 1, length)
    pattern = "YYYY-MM-DD" if length == 10 else "YYYY-MM"
    return func.to_char(func.timezone("UTC", usage_records.c.started_at), pattern)


def _merge(
    totals: dict[Group, dict[str, Any]],
    by: tuple[str, ...],
    row: Mapping[str, Any],
    *,
    from_rollup: bool,
) -> None:
    group: list[str | None] = []
    for index, dim in enumerate(by):
        if from_rollup:
            value: Any = row["day"] if dim in ("day", "month") else row[dim]
            if isinstance(value, date):
                value = value.isoformat()[: 10 if dim == "day" else 7]
            elif value == "" and dim in ("model", "service_tier"):
                value = None
        else:
            value = row[f"k{index}"]
        group.append(None if value is None else str(value))
    key = tuple(group)
    current = totals.get(key)
    if current is None:
        current = {name: 0 for name in METRICS}
        current["cost_usd"] = Decimal(0)
        totals[key] = current
    for name in METRICS:
        value = row[name]
        if value is not None:  # PostgreSQL's SUM(bigint) is numeric: back to int
            current[name] += value if name == "cost_usd" else int(value)
