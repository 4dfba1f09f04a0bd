"""``openai-meter serve`` -- run the proxy until SIGTERM/SIGINT, then drain and exit 0.

Start order: settings -> bind the listen address -> build the app -> open the ledger -> "listening".
A port in use is one line before anything is created; a database that cannot be opened is one line
naming its URL (password masked), exit 2. Heavy imports happen in :func:`run`, not at import time
(``openai-meter --help`` stays fast).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    from proxy.commands.workers import WorkerRole
    from proxy.settings import Settings


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
        help="upstream API origin (upstream.url, default https://api.openai.com; a base URL "
        "ending in /v1, as in OPENAI_BASE_URL, is accepted: the /v1 is dropped)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="ledger database (database.url, default sqlite:///openai-meter.db)",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        help="worker processes on the one port (server.workers, default 1; 'auto' = one per "
        "CPU core); SIGTERM to this process drains them all",
    )
    parser.add_argument(
        "--no-db-upgrade",
        action="store_true",
        help="do not run the ledger's migrations on start (database.auto_upgrade=false); the "
        "proxy then starts even if the database does not answer, and /readyz says so",
    )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    from proxy.config import load_settings

    return load_settings(
        config_path=args.config,
        environ=os.environ if environ is None else environ,
        cli={
            "--host": (("listen", "host"), args.host),
            "--port": (("listen", "port"), args.port),
            "--upstream": (("upstream", "url"), args.upstream),
            "--database-url": (("database", "url"), args.database_url),
            "--workers": (("server", "workers"), args.workers),
            "--no-db-upgrade": (
                ("database", "auto_upgrade"),
                False if args.no_db_upgrade else None,
            ),
        },
    )


def run(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"openai-meter: {exc}", file=sys.stderr)
        return 2

    import logging

    from proxy.commands.workers import stranded_spool, supervise, worker_count, workers_problem
    from proxy.http.server import BindError, bind, bound_port
    from proxy.observe.logs import configure_logging

    log = logging.getLogger("openai_meter.serve")
    configure_logging(settings.logging)
    count = worker_count(settings.server.workers, os.cpu_count())
    problem = workers_problem(settings, count) or stranded_spool(settings.ledger.spool_dir, count)
    if problem is not None:
        print(f"openai-meter: {problem}", file=sys.stderr)
        return 2
    host, port = settings.listen.host, settings.listen.port
    try:
        if count == 1:
            socket_sets = [bind(host, port)]
        else:  # one socket set per worker, SO_REUSEPORT: the kernel spreads connections over them
            socket_sets = [bind(host, port, reuse_port=True)]
            port = bound_port(socket_sets[0])
            socket_sets += [bind(host, port, reuse_port=True) for _ in range(count - 1)]
    except BindError as exc:
        print(f"openai-meter: {exc}", file=sys.stderr)
        return 2
    if settings.admin.token is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("admin.token is not set: /meter/* is open to anyone who can reach %s", host)
    try:
        if count == 1:
            code = serve_process(settings, socket_sets[0])
        else:
            code = supervise(settings, socket_sets, serve_process)
    finally:
        for sockets in socket_sets:
            for sock in sockets:
                sock.close()
    if code == 0:
        log.info("openai-meter stopped")
    return code


def serve_process(
    settings: Settings, sockets: list[socket.socket], role: WorkerRole | None = None
) -> int:
    """Serve on ``sockets`` in this process until SIGTERM/SIGINT (0), or 2 on a start-up error.

    ``role``: this process is one of ``serve --workers N`` (its index, its readiness pipe, the
    private sockets its metrics are merged through)."""
    import asyncio
    import logging
    import signal

    from proxy.app import SERVER_KWARGS, StartupError, create_app
    from proxy.http.event_loop import loop_name
    from proxy.http.event_loop import run as run_loop
    from proxy.http.server import bound_port, format_address, serve

    log = logging.getLogger("openai_meter.serve")
    address = format_address(settings.listen.host, bound_port(sockets))

    def started() -> None:
        log.info(
            "openai-meter listening on %s, forwarding /v1/ to %s", address, settings.upstream.url
        )
        if role is not None:
            role.started()

    async def main() -> None:
        log.info("event loop: %s", loop_name(asyncio.get_running_loop()))
        # The ledger is opened (and migrated unless database.auto_upgrade is false) on start.
        app = create_app(settings)
        if role is not None:
            role.wire(app, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(
            app,
            sockets,
            stop=stop,
            shutdown_timeout=settings.server.shutdown_grace_s,
            header_timeout_s=settings.server.header_timeout_s,
            idle_timeout_s=settings.server.idle_timeout_s,
            on_started=started,
            **SERVER_KWARGS,
        )

    try:
        run_loop(main(), use_uvloop=settings.server.uvloop)
    except StartupError as exc:
        print(f"openai-meter: {exc}", file=sys.stderr)
        return 2
    return 0
