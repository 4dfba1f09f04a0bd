"""``openai-meter demo``: try the product with no OpenAI key and no network.

Starts the real proxy in front of a built-in SIMULATED upstream (``proxy.demo``; canned answers,
labelled as such), sends a little traffic for three teams, prints the spend report and the URLs,
then keeps serving until Ctrl-C (``--once``: exit right after the report). The simulator is only
ever used here; ``serve`` has no way to select it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="try it without a key: the proxy in front of a SIMULATED upstream, sample traffic",
        description=(
            "Start the proxy in front of a built-in simulated OpenAI API (canned answers; no "
            "network, no key, nothing reaches OpenAI), send a few chat, streamed chat and "
            "embeddings calls for three teams, print the spend report and the spend page URL, "
            "then keep serving until Ctrl-C. The ledger goes to --dir (default: a temporary "
            "directory, removed at the end)."
        ),
    )
    parser.add_argument("--port", type=int, default=0, help="proxy port (default: any free one)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--dir", default=None, help="keep the demo's ledger in this directory")
    parser.add_argument(
        "--once", action="store_true", help="exit after printing the report (for scripts)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from proxy.app import StartupError
    from proxy.demo.run import run_demo
    from proxy.http.event_loop import run as run_loop
    from proxy.http.server import BindError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    print("openai-meter demo: the upstream is a SIMULATOR (canned answers, no OpenAI calls).\n")

    async def until_interrupted() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()

    with ExitStack() as stack:
        if args.dir:
            directory = Path(args.dir)
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="om-demo-")))
        try:
            result = run_loop(  # on uvloop when installed, as serve by default
                run_demo(
                    directory.resolve(),
                    host=args.host,
                    port=args.port,
                    wait=None if args.once else until_interrupted,
                    keep_ledger=bool(args.dir),
                ),
                use_uvloop=True,
            )
        except (BindError, StartupError) as exc:
            print(f"openai-meter demo: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C before the proxy was up
            return 130
    return 0 if result.calls else 1
