"""The ``budget_notifications`` table: which replica sends a budget alert.

Every replica that sees a team cross a threshold tries to *claim* the alert by inserting its key
``(team, period, period_start, event)`` with ``ON CONFLICT DO NOTHING``; the primary key lets exactly
one insert through on PostgreSQL and SQLite alike, and only that replica sends. A ``reset`` (the
period rolled over after an alert) is claimed in the same way, and only when the previous period has
a ``warn`` or ``exceeded`` row -- so whether a reset is due is decided by the database too, even by a
replica that started after the alert was sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.schema import budget_notifications

State = Literal["claimed", "delivered", "failed", "implied", "recorded"]
ALERT_EVENTS: Final[tuple[str, ...]] = ("warn", "exceeded")
# The column's width; longer team names are stored as a prefix plus a hash (still unique).
TEAM_WIDTH: Final = 128


@dataclass(frozen=True, slots=True)
class NotificationKey:
    team: str
    period: str
    period_start: datetime
    event: str


def team_key(team: str) -> str:
    """``team`` as stored: itself when the column can hold it, else a prefix and 16 hex of its
    SHA-256 (too long, a NUL -- PostgreSQL refuses it in text -- or not encodable as UTF-8)."""
    try:
        team.encode("utf-8")
        storable = "\x00" not in team
    except UnicodeEncodeError:
        storable = False
    if storable and len(team) <= TEAM_WIDTH:
        return team
    digest = hashlib.sha256(team.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = team[: TEAM_WIDTH - 17].encode("utf-8", "replace").decode("utf-8")
    return f"{prefix.replace(chr(0), '?')}~{digest}"


class SqlNotificationStore:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    async def _insert(
        self, conn: AsyncConnection, key: NotificationKey, event: str, state: State
    ) -> bool:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(budget_notifications)
            .values(
                team=team_key(key.team),
                period=key.period,
                period_start=key.period_start,
                event=event,
                state=state,
                claimed_at=self._clock(),
            )
            .on_conflict_do_nothing(index_elements=["team", "period", "period_start", "event"])
        )
        result = await conn.execute(stmt)
        return result.rowcount == 1

    async def claim(self, key: NotificationKey, *, implies: Sequence[str] = ()) -> bool:
        """True for the one caller (across replicas) that inserted ``key``: it sends the alert.

        ``implies`` are events of the same period to mark as moot (``implied``, never sent) in the
        same transaction, e.g. the ``warn`` of a period that went straight to ``exceeded``.
        """
        async with self._engine.begin() as conn:
            claimed = await self._insert(conn, key, key.event, "claimed")
            if claimed:
                for event in implies:
                    await self._insert(conn, key, event, "implied")
        return claimed

    async def claim_reset(self, key: NotificationKey, previous_start: datetime) -> bool:
        """Claim the ``reset`` of ``key``'s period when its previous period (starting at
        ``previous_start``) had a warn or exceeded alert; False otherwise or when already claimed."""
        table = budget_notifications
        alerted = select(table.c.event).where(
            and_(
                table.c.team == team_key(key.team),
                table.c.period == key.period,
                table.c.period_start == previous_start,
                table.c.event.in_(ALERT_EVENTS),
            )
        )
        async with self._engine.begin() as conn:
            if (await conn.execute(alerted.limit(1))).first() is None:
                return False
            return await self._insert(conn, key, "reset", "claimed")

    async def finish(self, key: NotificationKey, state: State) -> None:
        """Record how a claimed alert ended (``delivered`` / ``failed``)."""
        table = budget_notifications
        async with self._engine.begin() as conn:
            await conn.execute(
                update(table)
                .where(
                    and_(
                        table.c.team == team_key(key.team),
                        table.c.period == key.period,
                        table.c.period_start == key.period_start,
                        table.c.event == key.event,
                    )
                )
                .values(state=state, finished_at=self._clock())
            )

    async def rows(self) -> list[dict[str, object]]:
        """Every row, oldest claim first (tests and operators)."""
        table = budget_notifications
        async with self._engine.connect() as conn:
            result = await conn.execute(select(table).order_by(table.c.claimed_at))
        return [dict(row._mapping) for row in result]
