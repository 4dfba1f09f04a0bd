"""``openai-meter export focus``: the ledger as FinOps FOCUS 1.2 cost-and-usage rows.

``--out FILE.csv`` or ``FILE.parquet`` (Parquet needs the ``parquet`` extra); without ``--out``
the CSV goes to standard output. The window is ``[since, until)`` like ``report``'s; rows are per
UTC day, so give whole days to export whole days.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the ledger (focus: FinOps FOCUS 1.2 rows, CSV or Parquet)",
        description="Export the ledger in a standard format. 'focus': FinOps FOCUS 1.2 "
        "cost-and-usage rows, one per day x project x model x charge kind.",
    )
    parser.add_argument("format", choices=("focus",), help="the export format")
    parser.add_argument("--since", help="inclusive start (default: start of this UTC month)")
    parser.add_argument("--until", help="exclusive end (default: now)")
    parser.add_argument("--out", help="FILE.csv or FILE.parquet (default: CSV to stdout)")
    parser.add_argument(
        "--billing-account",
        help="BillingAccountId for rows without an OpenAI-Organization (your org id, org-...)",
    )
    parser.add_argument("--config", help="config file (YAML): database, pricing, reconcile")
    parser.add_argument("--database-url", help="ledger URL (env OPENAI_METER_DATABASE_URL)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from proxy.commands.export_run import main

    return main(args)
