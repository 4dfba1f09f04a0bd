"""Alembic, run programmatically from the package (no alembic.ini needed at the repo root).

``await upgrade(engine)`` brings a database to the head revision; ``serve`` calls it on start unless
``database.auto_upgrade`` is false, and ``openai-meter db upgrade`` calls it on demand.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_REVISION_LINE: Final = re.compile(r'^(down_)?revision\b[^=]*=\s*(?:"([^"]+)"|None)\s*$', re.M)


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade to ``revision`` (default: head). Safe to call on an up-to-date database.

    A database already at the head is recognised with one query and Alembic is not imported at
    all: ``serve`` upgrades on every start, and Alembic stayed in memory afterwards (~5 MiB of the
    idle proxy, issue 16). Anything else (an empty database, an older or unknown revision, several
    heads) goes through Alembic."""
    if revision == "head" and await _at_head(engine):
        return
    async with engine.begin() as conn:
        await conn.run_sync(_command, "upgrade", revision)


@functools.cache
def head_from_files() -> str | None:
    """The head revision read from the migration files' ``revision``/``down_revision`` lines
    (without Alembic); None when they do not form exactly one head."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        for down, name in _REVISION_LINE.findall(path.read_text("utf-8")):
            if name:
                (parents if down else revisions).add(name)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


async def _at_head(engine: AsyncEngine) -> bool:
    head = head_from_files()
    if head is None:
        return False
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except Exception:  # no table yet (a new database), or anything else: let Alembic decide
        return False
    return [row[0] for row in stored] == [head]


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_command, "downgrade", revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def _command(connection: Connection, name: str, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    if name == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)
