"""Ledger reads and writes for reconciliation with OpenAI's Usage and Costs APIs.

* :func:`ledger_groups` -- per UTC day x project x model: billable calls (those with usage) and
  their tokens, cost, unpriced / estimated calls, and the calls that ended ``upstream_timeout`` or
  ``client_disconnect``; summed in SQL (exact money on both backends).
* :func:`projects_seen` -- the projects with any row in the window.
* :func:`dead_letters_by_day` -- records in the dead-letter store (``ledger_rejected``) per day,
  or None when this ledger has no such table (it is looked up, not assumed).
* :func:`save_reconciliation` / :func:`latest_reconciliation` -- the ``reconciliation`` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.queries import utc_day_text
from storage.schema import ledger_rejected, reconciliation, usage_records

COUNTED_TOKENS: Final[tuple[str, ...]] = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "image_input_tokens",
    "image_output_tokens",
)


async def ledger_groups(
    engine: AsyncEngine, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """One dict per (day ``YYYY-MM-DD``, project, model): ``requests``, the token sums, ``cost``
    (Decimal), ``unpriced``, ``estimated``, ``timeouts``, ``disconnects``.

    ``model`` is the response's model, else the requested one; calls with neither are not model
    calls and are left out. ``requests`` counts calls with usage (``usage_source != 'none'``).
    """
    c = usage_records.c
    model = func.coalesce(c.model, c.model_requested)
    billable = c.usage_source != "none"
    async with engine.connect() as conn:
        day = utc_day_text(conn.dialect.name).label("day")
        stmt = (
            select(
                day,
                c.project.label("project"),
                model.label("model"),
                func.sum(case((billable, 1), else_=0)).label("requests"),
                *(func.sum(c[name]).label(name) for name in COUNTED_TOKENS),
                func.sum(c.cost_usd).label("cost"),
                func.sum(case((and_(billable, c.cost_usd.is_(None)), 1), else_=0)).label(
                    "unpriced"
                ),
                func.sum(case((c.usage_source == "estimated", 1), else_=0)).label("estimated"),
                func.sum(case((c.outcome == "upstream_timeout", 1), else_=0)).label("timeouts"),
                func.sum(case((c.outcome == "client_disconnect", 1), else_=0)).label("disconnects"),
            )
            .where(c.started_at >= since, c.started_at < until, model.is_not(None))
            .group_by(day, c.project, model)
        )
        rows = (await conn.execute(stmt)).mappings().all()
    out: list[dict[str, Any]] = []
    for row in rows:
        item: dict[str, Any] = {name: int(row[name] or 0) for name in ("requests", *COUNTED_TOKENS)}
        for name in ("unpriced", "estimated", "timeouts", "disconnects"):
            item[name] = int(row[name] or 0)
        item["day"] = date.fromisoformat(str(row["day"]))
        item["project"] = row["project"]
        item["model"] = row["model"]
        item["cost"] = row["cost"] if row["cost"] is not None else Decimal(0)
        out.append(item)
    return out


async def projects_seen(engine: AsyncEngine, since: datetime, until: datetime) -> set[str | None]:
    c = usage_records.c
    stmt = select(c.project).where(c.started_at >= since, c.started_at < until).distinct()
    async with engine.connect() as conn:
        return {row[0] for row in (await conn.execute(stmt)).all()}


async def dead_letters_by_day(
    engine: AsyncEngine, since: datetime, until: datetime
) -> dict[date, int]:
    """Dead-lettered records (``ledger_rejected``) per UTC day of ``[since, until)``, counted on
    their call's day (``started_at``; the day it was refused when the record had no valid start)."""
    r = ledger_rejected.c
    when = func.coalesce(r.started_at, r.first_seen_at)
    async with engine.connect() as conn:
        day = (
            func.substr(when, 1, 10)
            if conn.dialect.name == "sqlite"
            else func.to_char(func.timezone("UTC", when), "YYYY-MM-DD")
        )
        stmt = (
            select(day.label("day"), func.count().label("n"))
            .where(when >= since, when < until)
            .group_by(day)
        )
        rows = (await conn.execute(stmt)).all()
    return {date.fromisoformat(str(row[0])): int(row[1]) for row in rows}


async def save_reconciliation(engine: AsyncEngine, row: Mapping[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(reconciliation.insert().values(**row))


async def latest_reconciliation(engine: AsyncEngine) -> dict[str, Any] | None:
    stmt = (
        select(reconciliation)
        .order_by(reconciliation.c.run_at.desc(), reconciliation.c.id.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    return dict(row) if row is not None else None
