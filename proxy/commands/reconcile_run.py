"""The work of ``openai-meter reconcile`` (imported when the command runs, so ``--help`` stays light)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from aiohttp import ClientTimeout

from proxy.admin.reconcile.client import AdminApiError, AdminClient
from proxy.admin.reconcile.compare import Reconciliation
from proxy.admin.reconcile.render import parse_by, render
from proxy.admin.reconcile.run import Days, ReconcileConfigError, admin_key, reconcile, resolve_days
from proxy.admin.reporting import ReportError
from proxy.commands.report import NoLedger, open_ledger
from proxy.config import ConfigError, load_settings
from proxy.http.forward import egress_proxy_for
from proxy.http.upstream_session import open_upstream_session
from proxy.settings import Settings

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_MISMATCH: Final = 3
# The Admin API answers in seconds; a minute per read is generous and still ends a stuck cron job.
READ_TIMEOUT_S: Final = 60.0


def _fail(code: int, message: str) -> int:
    print(f"openai-meter reconcile: {message}", file=sys.stderr)
    return code


def _tolerance(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip().rstrip("%"))
    except InvalidOperation:
        raise ReconcileConfigError(f"--tolerance {text!r} is not a number of percent") from None
    if not value.is_finite() or value < 0 or value > 100:
        raise ReconcileConfigError("--tolerance must be between 0 and 100 (percent)")
    return value


def main(args: argparse.Namespace) -> int:
    return run(args, os.environ)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    now = datetime.now(UTC)
    try:
        settings = load_settings(
            config_path=args.config,
            environ=environ,
            cli={
                "--database-url": (("database", "url"), args.database_url),
                "--upstream": (("upstream", "url"), args.upstream),
            },
        )
        key = admin_key(settings.reconcile, environ)
        days = resolve_days(args.since, args.until, now)
        by = parse_by(args.by)
        tolerance = _tolerance(args.tolerance)
    except (ConfigError, ReconcileConfigError, ReportError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    try:
        rec = asyncio.run(_reconcile(settings, key, days, now, tolerance))
    except (AdminApiError, NoLedger) as exc:
        return _fail(EXIT_ERROR, str(exc))
    except Exception as exc:  # one line, never a traceback (and never the key: it is not in it)
        return _fail(EXIT_ERROR, f"{type(exc).__name__}: {str(exc).replace(key, '…')[:300]}")
    sys.stdout.write(render(rec, args.format, by))
    return EXIT_OK if rec.ok else EXIT_MISMATCH


async def _reconcile(
    settings: Settings, key: str, days: Days, now: datetime, tolerance: Decimal | None
) -> Reconciliation:
    timeout = ClientTimeout(
        total=None, sock_connect=settings.upstream.connect_timeout_s, sock_read=READ_TIMEOUT_S
    )
    engine = await open_ledger(settings.database.url)  # before anything asks the Admin API
    try:
        async with open_upstream_session(settings.upstream, timeout) as session:
            client = AdminClient(
                session, settings.upstream.url, key, proxy=egress_proxy_for(settings.upstream.url)
            )
            return await reconcile(
                client, engine, days, settings.reconcile, now, tolerance_percent=tolerance
            )
    finally:
        await engine.dispose()
