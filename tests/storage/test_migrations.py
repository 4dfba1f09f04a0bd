"""Alembic: from empty to head, every revision down and up again, and the result equals schema.py."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import create_engine
from storage.ledger import write_batch
from storage.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from storage.schema import metadata, usage_daily
from tests.support.ledger_records import make_record

REVISIONS = [
    s.revision
    for s in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]


def test_revisions_are_a_single_line_of_simple_ids() -> None:
    assert REVISIONS[:3] == ["0001_usage_records", "0002_usage_daily", "0003_dedupe_objects"]
    assert head_revision() == REVISIONS[-1]  # one head: a straight line (later issues add on top)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _diff(engine: AsyncEngine) -> list[Any]:
    """Differences between the migrated database and storage.schema, for the ledger's tables."""
    ours = set(metadata.tables)

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return type_ != "table" or name in ours

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(
                    c, opts={"compare_type": True, "include_object": include}
                ),
                metadata,
            )
        )


async def test_empty_to_head_matches_the_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        assert {"usage_records", "usage_daily", "dedupe_objects"} <= await _tables(engine)
        assert await _diff(engine) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("start", REVISIONS[:-1])
async def test_upgrade_from_each_earlier_revision_and_round_trip(
    database_url: str, start: str
) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, start)
        assert await current_revision(engine) == start
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        await downgrade(engine, start)
        assert await current_revision(engine) == start
        await upgrade(engine)
        assert await _diff(engine) == []
        await downgrade(engine, "base")
        assert await _tables(engine) <= {"alembic_version"}
    finally:
        await engine.dispose()


async def test_rollup_revision_backfills_rows_written_before_it(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0001_usage_records")
        records = [make_record(n) for n in range(40)]
        async with engine.begin() as conn:  # raw rows only, as a 0001-era writer left them
            from storage.bulk import insert_new

            await insert_new(conn, records)
        await upgrade(engine)
        async with engine.connect() as conn:
            requests, cost = (
                await conn.execute(
                    select(func.sum(usage_daily.c.requests), func.sum(usage_daily.c.cost_usd))
                )
            ).one()
        assert (requests, cost) == (40, sum(r.cost_usd for r in records if r.cost_usd is not None))
        assert await write_batch(engine, [make_record(40)]) == 1
    finally:
        await engine.dispose()


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    from storage.migrate import head_from_files

    assert head_from_files() == head_revision()


async def test_an_older_revision_still_upgrades_through_alembic(database_url: str) -> None:
    """The at-head shortcut must never skip a needed migration."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, REVISIONS[-2])
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        assert await _diff(engine) == []
    finally:
        await engine.dispose()


def test_a_start_on_a_database_at_head_does_not_import_alembic(tmp_path: Any) -> None:
    """serve upgrades on every start: at the head that is one query, and Alembic stays out of
    memory (a fresh interpreter, as a restarted proxy)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'l.db'}"
    script = (
        "import asyncio, sys\n"
        "from storage.engine import create_engine\n"
        "from storage.migrate import upgrade\n"
        "async def main():\n"
        f"    engine = create_engine({url!r})\n"
        "    await upgrade(engine)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (first.stdout.strip(), again.stdout.strip()) == ("True", "False"), first.stderr
