"""``openai-meter report``: spend from the ledger, grouped, as a table, CSV or JSON.

Imports what it needs when it runs (no aiohttp, no tiktoken): ``--help`` and a report over a small
ledger stay well under a second. A URL with no ledger is said so; nothing is created.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from pricing.book import PriceBook
    from pricing.whatif import Lever
    from proxy.admin.reporting import Window

DATABASE_URL_ENV = "OPENAI_METER_DATABASE_URL"
FORMATS = ("table", "csv", "json")  # == proxy.admin.reporting.FORMATS (checked by a test)


class NoLedger(Exception):
    """The database URL has no ledger (no SQLite file, or no ``usage_records`` table)."""


async def open_ledger(url: str, *, tables: tuple[str, ...] = ()) -> AsyncEngine:
    """An engine on the existing ledger at ``url``, for the commands that only read or tidy it
    (``report``, ``export``, ``reconcile``, ``db rejected|prune|current``).

    Raises :class:`NoLedger` (one line for the user: exit 1) when there is none, having created
    nothing: a SQLite path that is not a file is refused before an engine exists (opening it
    would create the file, and its directories); a database without the ledger's tables (or
    without one of ``tables``, added by a later migration) after one read. ``ValueError`` for
    a URL that is not one the ledger can use."""
    import asyncio

    from storage.engine import create_engine
    from storage.queries import has_tables, sqlite_has_tables
    from storage.schema import usage_records
    from storage.urls import masked, sqlite_file

    path = sqlite_file(url)
    where = f"{masked(url)} ({path})" if path is not None else masked(url)
    names = (usage_records.name, *tables)
    if path is not None:
        if not path.is_file():
            raise NoLedger(_missing(where))
        # read-only, before any engine: an empty file or another database is left untouched
        ledger, *present = await asyncio.to_thread(sqlite_has_tables, path, names)
        if not ledger:
            raise NoLedger(_missing(where))
    engine = create_engine(url)
    try:
        if path is None:
            ledger, *present = await has_tables(engine, names)
            if not ledger:
                raise NoLedger(_missing(where))
        if absent := [table for table, there in zip(tables, present, strict=True) if not there]:
            raise NoLedger(
                f"the ledger at {where} has no {absent[0]} table yet (an older schema): run "
                "'openai-meter db upgrade'"
            )
    except BaseException:
        await engine.dispose()
        raise
    return engine


def _missing(where: str) -> str:
    return (
        f"no ledger at {where}: the proxy creates it on its first start (or run "
        "'openai-meter db upgrade'); nothing was created"
    )


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="spend per team/model/... from the ledger",
        description=(
            "Spend over [since, until) from the ledger. Times: dates (2026-11-01), timestamps "
            "(2026-11-01T12:00:00Z), unix seconds, or spans before now (7d, 24h). Default: from "
            "the start of the current UTC month until now."
        ),
    )
    parser.add_argument("--since", help="inclusive start (default: start of this UTC month)")
    parser.add_argument("--until", help="exclusive end (default: now)")
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        help="group by: team, model, project, organization, user, endpoint, service_tier, "
        "key_fingerprint, day, month, tag:KEY (comma-separated or repeated)",
    )
    parser.add_argument("--team", help="only this team")
    parser.add_argument("--model", help="only this (response) model")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="LEVER",
        help="re-price the same calls: model=MODEL or tier=standard|batch|flex|priority "
        "(repeatable); each row gets the what-if cost, the difference and what could not be "
        "re-priced",
    )
    parser.add_argument(
        "--savings",
        action="store_true",
        help="add savings already made: cached input, batch and flex, and the cached share",
    )
    parser.add_argument("--database-url", help=f"ledger URL (env {DATABASE_URL_ENV})")
    parser.add_argument("--config", help="config file (YAML) to read database.url from")
    parser.set_defaults(func=_run)


def database_url(args: argparse.Namespace) -> str:
    """CLI flag > environment > config file > default."""
    import os

    from proxy.config import load_settings

    settings = load_settings(
        config_path=args.config,
        environ=os.environ,
        cli={"--database-url": (("database", "url"), args.database_url)},
    )
    return settings.database.url


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import os
    from datetime import UTC, datetime

    from proxy.admin.reporting import ReportError, parse_by, resolve_window
    from proxy.config import ConfigError
    from storage.urls import masked, problem

    try:
        window = resolve_window(args.since, args.until, datetime.now(UTC))
        by = parse_by(args.by)
    except ReportError as exc:
        print(f"openai-meter report: {exc}", file=sys.stderr)
        return 2
    try:
        url = database_url(args)
    except ConfigError as exc:
        print(f"openai-meter report: {exc}", file=sys.stderr)
        return 2
    book: PriceBook | None = None
    levers: tuple[Lever, ...] = ()
    try:
        if args.what_if or args.savings:
            from pricing.whatif import WHAT_IF_TIERS, LeverError, has_empty_lever, parse_levers
            from proxy.commands.prices import configured_book

            try:
                if has_empty_lever(args.what_if):
                    raise LeverError(
                        "--what-if must not be empty or hold an empty lever: give "
                        f"model=MODEL or tier={'|'.join(WHAT_IF_TIERS)}"
                    )
                book = configured_book(args.config, os.environ)
                levers = parse_levers(args.what_if, book)
            except (LeverError, ConfigError, ValueError) as exc:
                print(f"openai-meter report: {exc}", file=sys.stderr)
                return 2
        text = asyncio.run(_report(url, args, window, by, book, levers))
    except NoLedger as exc:
        print(f"openai-meter report: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a URL that is not one the ledger can use
        print(f"openai-meter report: database.url {masked(url)}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the user needs one line, not a traceback
        print(f"openai-meter report: ledger at {masked(url)}: {problem(exc, url)}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


async def _report(
    url: str,
    args: argparse.Namespace,
    window: Window,
    by: tuple[str, ...],
    book: PriceBook | None = None,
    levers: tuple[Lever, ...] = (),
) -> str:
    from proxy.admin.report_query import load_report
    from proxy.admin.reporting import render

    engine = await open_ledger(url)
    try:
        report = await load_report(engine, window, by, team=args.team, model=args.model)
        if book is not None:
            from proxy.admin.whatif import load_extras, render_extended

            filters = {k: v for k, v in (("team", args.team), ("model", args.model)) if v}
            extras = await load_extras(
                engine, book, window, by, levers, with_savings=args.savings, filters=filters
            )
            return render_extended(report, extras, args.format)
    finally:
        await engine.dispose()
    return render(report, args.format)
