"""``openai-meter serve`` -- run the proxy until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from proxy.config import ConfigError, load_settings
from proxy.http.server import run as run_server
from proxy.settings import Settings

log = logging.getLogger("openai_meter.serve")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the metering proxy",
        description=(
            "Run the proxy. Settings come from CLI flags > OPENAI_METER_* environment > the YAML "
            "config file > defaults (see config.example.yaml). SIGTERM stops accepting, lets "
            "in-flight calls finish for server.shutdown_grace_s, and exits 0."
        ),
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (default: $OPENAI_METER_CONFIG, if set)"
    )
    parser.add_argument(
        "--host", metavar="H", help="listen address (listen.host, default 127.0.0.1)"
    )
    parser.add_argument("--port", metavar="P", help="listen port (listen.port, default 8080)")
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help="upstream API origin (upstream.url, default https://api.openai.com)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="ledger database (database.url, default sqlite:///openai-meter.db)",
    )
    parser.add_argument(
        "--no-db-upgrade",
        action="store_true",
        help="do not run the ledger's migrations on start (database.auto_upgrade=false)",
    )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(
        config_path=args.config,
        environ=os.environ if environ is None else environ,
        cli={
            "--host": (("listen", "host"), args.host),
            "--port": (("listen", "port"), args.port),
            "--upstream": (("upstream", "url"), args.upstream),
            "--database-url": (("database", "url"), args.database_url),
            "--no-db-upgrade": (
                ("database", "auto_upgrade"),
                False if args.no_db_upgrade else None,
            ),
        },
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"openai-meter: {exc}", file=sys.stderr)
        return 2

    from proxy.app import SERVER_KWARGS, StartupError, create_app
    from proxy.observe.logs import configure_logging

    configure_logging(settings.logging)
    if settings.admin.token is None and settings.listen.host not in (
        "127.0.0.1",
        "localhost",
        "::1",
    ):
        log.warning(
            "admin.token is not set: /meter/* is open to anyone who can reach %s",
            settings.listen.host,
        )
    try:
        # The ledger is migrated to head on start (unless database.auto_upgrade is false).
        app = create_app(settings)
    except StartupError as exc:
        print(f"openai-meter: {exc}", file=sys.stderr)
        return 2
    log.info(
        "openai-meter listening on %s:%s, forwarding /v1/ to %s",
        settings.listen.host,
        settings.listen.port,
        settings.upstream.url,
    )
    run_server(
        app,
        host=settings.listen.host,
        port=settings.listen.port,
        header_timeout_s=settings.server.header_timeout_s,
        idle_timeout_s=settings.server.idle_timeout_s,
        shutdown_timeout=settings.server.shutdown_grace_s,
        **SERVER_KWARGS,
    )
    log.info("openai-meter stopped")
    return 0
