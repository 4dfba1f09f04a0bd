"""``openai-meter report``: spend from the ledger, grouped, as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

from pricing.book import PriceBook
from pricing.whatif import Lever, LeverError, parse_levers
from proxy.admin.admin_api import load_report
from proxy.admin.reporting import FORMATS, ReportError, Window, parse_by, render, resolve_window
from proxy.admin.whatif import load_extras, render_extended
from proxy.commands.prices import configured_book
from proxy.config import ConfigError, load_settings
from storage.engine import create_engine

DATABASE_URL_ENV = "OPENAI_METER_DATABASE_URL"


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
    settings = load_settings(
        config_path=args.config,
        environ=os.environ,
        cli={"--database-url": (("database", "url"), args.database_url)},
    )
    return settings.database.url


def _run(args: argparse.Namespace) -> int:
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
            book = configured_book(args.config, os.environ)
            levers = parse_levers(args.what_if, book)
    except (LeverError, ConfigError, ValueError) as exc:
        print(f"openai-meter report: {exc}", file=sys.stderr)
        return 2
    try:
        text = asyncio.run(_report(url, args, window, by, book, levers))
    except Exception as exc:  # the user needs one line, not a traceback
        print(f"openai-meter report: {type(exc).__name__}: {exc}", file=sys.stderr)
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
    engine = create_engine(url)
    try:
        report = await load_report(engine, window, by, team=args.team, model=args.model)
        if book is not None:
            filters = {k: v for k, v in (("team", args.team), ("model", args.model)) if v}
            extras = await load_extras(
                engine, book, window, by, levers, with_savings=args.savings, filters=filters
            )
            return render_extended(report, extras, args.format)
    finally:
        await engine.dispose()
    return render(report, args.format)
