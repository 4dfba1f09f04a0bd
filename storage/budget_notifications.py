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
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
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


@dataclass(frozen=True, slots=True)
class Numbers:
    """The budget's numbers when the alert was due (kept with the claim)."""

    spent: Decimal
    limit: Decimal
    warn_at_percent: Decimal


@dataclass(frozen=True, slots=True)
class StaleClaim:
    """A claimed alert nobody finished: its claimer died or gave up mid-delivery."""

    key: NotificationKey
    numbers: Numbers | None
    claimed_at: datetime


NUMBER_WIDTH: Final = 64


def _number_text(value: Decimal) -> str:
    """Exact decimal text when it fits the column (it always does for real budgets)."""
    text = str(value)
    return text if len(text) <= NUMBER_WIDTH else f"{value:.30E}"


def _number(text: object) -> Decimal | None:
    if not isinstance(text, str):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


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
        self,
        conn: AsyncConnection,
        key: NotificationKey,
        event: str,
        state: State,
        numbers: Numbers | None,
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
                spent_usd=_number_text(numbers.spent) if numbers else None,
                limit_usd=_number_text(numbers.limit) if numbers else None,
                warn_at_percent=_number_text(numbers.warn_at_percent) if numbers else None,
            )
            .on_conflict_do_nothing(index_elements=["team", "period", "period_start", "event"])
        )
        result = await conn.execute(stmt)
        return result.rowcount == 1

    async def claim(
        self, key: NotificationKey, *, numbers: Numbers | None = None, implies: Sequence[str] = ()
    ) -> bool:
        """True for the one caller (across replicas) that inserted ``key``: it sends the alert.

        ``implies`` are events of the same period to mark as moot (``implied``, never sent) in the
        same transaction, e.g. the ``warn`` of a period that went straight to ``exceeded``.
        """
        async with self._engine.begin() as conn:
            claimed = await self._insert(conn, key, key.event, "claimed", numbers)
            if claimed:
                for event in implies:
                    await self._insert(conn, key, event, "implied", numbers)
        return claimed

    async def claim_reset(
        self, key: NotificationKey, previous_start: datetime, *, numbers: Numbers | None = None
    ) -> bool:
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
            return await self._insert(conn, key, "reset", "claimed", numbers)

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

    async def stale_claims(self, older_than_s: float, limit: int = 100) -> list[StaleClaim]:
        """Alerts still ``claimed`` ``older_than_s`` after their claim (oldest first)."""
        table = budget_notifications
        cutoff = self._clock() - timedelta(seconds=older_than_s)
        statement = (
            select(table)
            .where(and_(table.c.state == "claimed", table.c.claimed_at < cutoff))
            .order_by(table.c.claimed_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        claims: list[StaleClaim] = []
        for row in rows:
            spent, limit_, warn = (
                _number(row.spent_usd),
                _number(row.limit_usd),
                _number(row.warn_at_percent),
            )
            numbers = (
                Numbers(spent, limit_, warn)
                if spent is not None and limit_ is not None and warn is not None
                else None
            )
            key = NotificationKey(row.team, row.period, row.period_start, row.event)
            claims.append(StaleClaim(key, numbers, row.claimed_at))
        return claims

    async def reclaim(self, claim: StaleClaim) -> bool:
        """Take over a stale claim: True for the one replica whose compare-and-set on
        ``claimed_at`` went through (it sends; the others see the new ``claimed_at``)."""
        table = budget_notifications
        k = claim.key
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(table)
                .where(
                    and_(
                        table.c.team == k.team,  # as stored (the row's own value)
                        table.c.period == k.period,
                        table.c.period_start == k.period_start,
                        table.c.event == k.event,
                        table.c.state == "claimed",
                        table.c.claimed_at == claim.claimed_at,
                    )
                )
                .values(claimed_at=self._clock())
            )
        return result.rowcount == 1

    async def rows(self) -> list[dict[str, object]]:
        """Every row, oldest claim first (tests and operators)."""
        table = budget_notifications
        async with self._engine.connect() as conn:
            result = await conn.execute(select(table).order_by(table.c.claimed_at))
        return [dict(row._mapping) for row in result]
