"""``openai-meter db upgrade|prune|current|rejected`` -- the ledger's schema (Alembic), retention,
and the dead-letter store (``db rejected list`` / ``db rejected retry [--id N ...]``).

The database URL comes from ``--database-url`` > ``OPENAI_METER_DATABASE_URL`` > ``--config`` file
(``database.url``) > ``sqlite:///openai-meter.db`` (relative to the working directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when the command runs, not for --help
    from sqlalchemy.ext.asyncio import AsyncEngine

    from proxy.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "db",
        help="Manage the ledger database (migrations, retention)",
        description=(
            "The ledger database: 'upgrade' migrates it to the newest schema (serve does so on "
            "start unless --no-db-upgrade), 'current' shows its schema revision, 'prune' deletes "
            "raw rows older than the retention window (the daily rollups are kept). The URL comes "
            "from --database-url > OPENAI_METER_DATABASE_URL > --config (database.url) > "
            "sqlite:///openai-meter.db."
        ),
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    up = actions.add_parser("upgrade", help="Migrate the ledger database to the newest schema")
    _common(up)
    up.set_defaults(func=_upgrade)

    pr = actions.add_parser(
        "prune", help="Delete raw ledger rows older than the retention window (rollups are kept)"
    )
    _common(pr)
    pr.add_argument(
        "--retention-days",
        type=int,
        default=None,
        help="keep this many whole UTC days of raw rows (default: ledger.retention_days)",
    )
    pr.set_defaults(func=_prune)

    cur = actions.add_parser("current", help="Show the database's schema revision and the newest")
    _common(cur)
    cur.set_defaults(func=_current)

    rej = actions.add_parser(
        "rejected",
        help="List dead-lettered ledger records (refused by the database), or re-insert them",
    )
    rej_actions = rej.add_subparsers(dest="rejected_command", metavar="ACTION")
    rej.set_defaults(func=_rejected_list, limit=100)
    _common(rej)
    ls = rej_actions.add_parser("list", help="Show dead-lettered records, newest first (default)")
    _common(ls, argparse.SUPPRESS)  # given before or after the action, both work
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.set_defaults(func=_rejected_list)
    rt = rej_actions.add_parser(
        "retry",
        help="Re-insert dead-lettered records (after a fix); those still refused stay, counted",
    )
    _common(rt, argparse.SUPPRESS)
    rt.add_argument(
        "--id", type=int, action="append", dest="ids", help="only this row (repeatable)"
    )
    rt.set_defaults(func=_rejected_retry)


def _common(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--database-url", default=default, help="e.g. sqlite:///openai-meter.db")
    parser.add_argument("--config", default=default, help="YAML config file")


def _settings(args: argparse.Namespace) -> Settings:
    from proxy.config import load_settings

    return load_settings(
        config_path=args.config,
        environ=os.environ,
        cli={"--database-url": (("database", "url"), args.database_url)},
    )


def _run(args: argparse.Namespace, action: str) -> int:
    import asyncio

    from proxy.commands.report import NoLedger
    from proxy.config import ConfigError
    from storage.urls import describe, to_async_url

    try:
        settings = _settings(args)
        url = describe(to_async_url(settings.database.url))
        return asyncio.run(_main(action, settings, args, url))
    except (ConfigError, ValueError) as exc:
        print(f"openai-meter db {action}: {exc}", file=sys.stderr)
        return 2
    except NoLedger as exc:  # only upgrade creates a ledger; the others say there is none
        print(f"openai-meter db {action}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a database error: one line, not a traceback
        print(f"openai-meter db {action}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _main(action: str, settings: Settings, args: argparse.Namespace, url: str) -> int:
    from datetime import UTC, datetime

    from proxy.commands.report import open_ledger
    from storage.engine import create_engine
    from storage.migrate import current_revision, head_revision, upgrade
    from storage.rejected import retry_rejected
    from storage.retention import cutoff, prune
    from storage.schema import ledger_rejected

    if action == "upgrade":  # the one action that creates the database (and its directory)
        engine = create_engine(settings.database.url)
    else:
        needs = (ledger_rejected.name,) if action.startswith("rejected") else ()
        engine = await open_ledger(settings.database.url, tables=needs)
    try:
        if action == "upgrade":
            await upgrade(engine)
            print(f"ledger at {url}: schema {await current_revision(engine)} (head)")
        elif action == "current":
            print(
                f"ledger at {url}: schema {await current_revision(engine)}, newest {head_revision()}"
            )
        elif action == "rejected list":
            await _print_rejected(engine, url, args.limit)
        elif action == "rejected retry":
            result = await retry_rejected(engine, args.ids)
            print(
                f"ledger at {url}: {result.inserted} re-inserted, "
                f"{result.still_rejected} still refused"
            )
            return 0 if result.still_rejected == 0 else 1
        else:
            days = args.retention_days or settings.ledger.retention_days
            if not days or days <= 0:
                print(
                    "openai-meter db prune: no retention window (set ledger.retention_days or "
                    "--retention-days)",
                    file=sys.stderr,
                )
                return 2
            before = cutoff(datetime.now(UTC), days)
            deleted = await prune(engine, before=before)
            print(
                f"ledger at {url}: deleted {deleted} raw rows started before {before.isoformat()}"
            )
    finally:
        await engine.dispose()
    return 0


async def _print_rejected(engine: AsyncEngine, url: str, limit: int) -> None:
    from storage.rejected import list_rejected, rejected_totals

    rows = await list_rejected(engine, limit=limit)
    count, cost = await rejected_totals(engine)
    print(f"ledger at {url}: {count} rejected records, known cost {cost} USD")
    if rows:
        print("id\trecord_id\tstarted_at\tteam\tcost_usd\tretries\terror")
    for row in rows:
        started = row.started_at.isoformat() if row.started_at else "-"
        cost_text = str(row.cost_usd) if row.cost_usd is not None else "-"
        error = " ".join(row.error.split())[:200]
        print(
            f"{row.id}\t{row.record_id or '-'}\t{started}\t{row.team or '-'}\t{cost_text}\t"
            f"{row.retries}\t{error}"
        )


def _rejected_list(args: argparse.Namespace) -> int:
    return _run(args, "rejected list")


def _rejected_retry(args: argparse.Namespace) -> int:
    return _run(args, "rejected retry")


def _upgrade(args: argparse.Namespace) -> int:
    return _run(args, "upgrade")


def _prune(args: argparse.Namespace) -> int:
    return _run(args, "prune")


def _current(args: argparse.Namespace) -> int:
    return _run(args, "current")
