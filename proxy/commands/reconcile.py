"""``openai-meter reconcile``: does the ledger match OpenAI's own Usage and Costs figures?

Exit status: 0 when every day x project is within the tolerance (cost) and every day x project x
model has equal requests and tokens (days OpenAI still restates never fail); 3 when not; 2 on a
usage or configuration error; 1 when the Admin API or the ledger could not be read.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="compare the ledger with OpenAI's Usage and Costs APIs (admin key)",
        description=(
            "Compare the ledger with OpenAI's Admin API (usage per day x project x model, costs "
            "per day x project) over whole UTC days, and explain every difference. Reads the "
            "admin key from OPENAI_ADMIN_KEY (or reconcile.admin_key_env). Exit status 0 when "
            "within tolerance, 3 when not."
        ),
    )
    parser.add_argument("--since", help="first day (inclusive; default 7d = the last 7 days)")
    parser.add_argument("--until", help="end (exclusive; default now, rounded up to a whole day)")
    parser.add_argument(
        "--by", action="append", default=[], help="group by day, project, model (default all)"
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--tolerance",
        help="allowed cost difference in percent of billed USD (default reconcile.tolerance_percent, 1)",
    )
    parser.add_argument("--config", help="config file (YAML)")
    parser.add_argument("--database-url", help="ledger URL (env OPENAI_METER_DATABASE_URL)")
    parser.add_argument("--upstream", help="upstream URL (env OPENAI_METER_UPSTREAM_URL)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from proxy.commands.reconcile_run import main

    return main(args)
