"""A real database-side refusal on each backend, for ledger tests: rows whose model is ``poison``
are refused by the database itself (a SQLite trigger, a PostgreSQL CHECK constraint)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine


async def refuse_poison(engine: AsyncEngine) -> None:
    """A database-side refusal on each backend: inserting model='poison' raises."""
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_records "
                "WHEN NEW.model = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
            )
        else:
            await conn.exec_driver_sql(
                "ALTER TABLE usage_records ADD CONSTRAINT refuse_poison CHECK (model <> 'poison')"
            )


async def accept_poison(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("DROP TRIGGER refuse_poison")
        else:
            await conn.exec_driver_sql("ALTER TABLE usage_records DROP CONSTRAINT refuse_poison")
