"""``openai-meter`` -- the console script. One sub-command per module in ``proxy.commands``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy.commands import db, demo, encodings, export, keys, prices, reconcile, report, serve

_COMMANDS = (serve, report, prices, db, keys, encodings, reconcile, export, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openai-meter",
        description=(
            "A transparent metering proxy in front of the OpenAI API: point OPENAI_BASE_URL at it, "
            "and every call is forwarded unchanged, priced exactly and recorded to a SQL ledger "
            "and Prometheus."
        ),
        epilog="Run 'openai-meter COMMAND --help' for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
