"""Ledger reads for budgets: every budgeted team's spend over several windows in one query.

(Reports and ``/meter/records`` use :mod:`storage.queries`.) The sum runs in SQL on the exact
``Money`` type (integer units on SQLite, NUMERIC on PostgreSQL), so no float is ever involved.
Spend belongs to a window by ``started_at`` (``start <= started_at < until``), like the rollup.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.schema import usage_records

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
