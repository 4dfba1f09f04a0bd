"""The work of ``openai-meter export`` (imported when the command runs, so ``--help`` stays light)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime

from pricing.book import PriceBook
from proxy.admin.focus.rows import Group, GroupKey, add_row, focus_rows
from proxy.admin.focus.write import ExportError, write
from proxy.admin.reporting import ReportError, Window, resolve_window
from proxy.commands.report import NoLedger, open_ledger
from proxy.config import ConfigError, load_settings
from proxy.settings import Settings
from storage.focus import billable_rows


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            config_path=args.config,
            environ=os.environ,
            cli={"--database-url": (("database", "url"), args.database_url)},
        )
        window = resolve_window(args.since, args.until, datetime.now(UTC))
        book = PriceBook.load(
            overrides=settings.pricing.overrides,
            discount_percent=settings.pricing.discount_percent,
            model_discount_percent=settings.pricing.model_discount_percent,
        )
    except (ConfigError, ReportError, ValueError) as exc:
        print(f"openai-meter export: {exc}", file=sys.stderr)
        return 2
    try:
        text = asyncio.run(_export(settings, window, book, args.out, args.billing_account))
    except ExportError as exc:
        print(f"openai-meter export: {exc}", file=sys.stderr)
        return 2
    except NoLedger as exc:
        print(f"openai-meter export: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for the user, not a traceback
        print(f"openai-meter export: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if text is not None:
        sys.stdout.write(text)
    return 0


async def _export(
    settings: Settings, window: Window, book: PriceBook, out: str | None, account: str | None
) -> str | None:
    engine = await open_ledger(settings.database.url)
    groups: dict[GroupKey, Group] = {}  # memory grows with groups, not with ledger rows
    try:
        async for rows in billable_rows(engine, window.since, window.until):
            for row in rows:
                add_row(groups, row, settings.reconcile.default_project)
    finally:
        await engine.dispose()
    focus = focus_rows(groups, book, PriceBook.load(), billing_account=account)
    return write(focus, out)
