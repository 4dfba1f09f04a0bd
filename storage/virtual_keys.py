"""The ``virtual_keys`` table: issue, list, revoke, and load the live ones (hash -> key).

Only a key's SHA-256 and its public fingerprint are stored; the raw key is shown once, at creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.schema import virtual_keys


@dataclass(frozen=True, slots=True)
class VirtualKeyRow:
    id: str
    key_hash: str
    fingerprint: str
    team: str
    description: str | None
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


async def insert_key(engine: AsyncEngine, row: VirtualKeyRow) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(virtual_keys).values(
                id=row.id,
                key_hash=row.key_hash,
                fingerprint=row.fingerprint,
                team=row.team,
                description=row.description,
                created_at=row.created_at,
                revoked_at=row.revoked_at,
            )
        )


async def list_keys(engine: AsyncEngine, *, include_revoked: bool = True) -> list[VirtualKeyRow]:
    statement = select(virtual_keys).order_by(virtual_keys.c.created_at, virtual_keys.c.id)
    if not include_revoked:
        statement = statement.where(virtual_keys.c.revoked_at.is_(None))
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return [VirtualKeyRow(**row._asdict()) for row in rows]


async def revoke_key(engine: AsyncEngine, key_id: str, at: datetime) -> bool:
    """True when a live key was revoked; False when unknown or already revoked."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(virtual_keys)
            .where(virtual_keys.c.id == key_id, virtual_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
    return bool(result.rowcount)


async def active_teams_by_hash(engine: AsyncEngine) -> dict[str, tuple[str, str]]:
    """``{key_hash: (key id, team)}`` for every key not revoked."""
    statement = select(virtual_keys.c.key_hash, virtual_keys.c.id, virtual_keys.c.team).where(
        virtual_keys.c.revoked_at.is_(None)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return {row.key_hash: (row.id, row.team) for row in rows}
