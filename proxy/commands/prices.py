"""``openai-meter prices [MODEL] [--at DATE] [--format table|json] [--config FILE]`` and
``prices check``.

``prices`` lists the prices in effect on a date for this deployment (all models, or what MODEL
resolves to; a snapshot or ``ft:`` name works): the shipped catalog with the configuration's
``pricing.overrides``, ``discount_percent`` and ``model_discount_percent`` applied, read the way
``serve`` reads them (``--config`` or ``OPENAI_METER_CONFIG``, then ``OPENAI_METER_PRICING__*``
environment variables). Configured prices are marked with the ``price_ref`` suffix the ledger gets:
``+override`` for a negotiated price, ``-N%`` for a discount on the total. ``prices check`` compares the catalog with the ``genai-prices``
package (``pip install 'openai-meter[check]'``) and prints where they disagree.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # imported when the command runs, not for --help
    from pricing.book import PriceBook

DESCRIPTION = (
    "List the prices in effect on a date for this deployment: every model, or what MODEL resolves "
    "to (a dated snapshot or an ft: name works). The shipped catalog is shown with the "
    "configuration's pricing.overrides, discount_percent and model_discount_percent applied, read "
    "the way 'serve' reads them (--config or OPENAI_METER_CONFIG, then OPENAI_METER_PRICING__* "
    "environment variables). Configured prices are marked with the price_ref suffix the ledger "
    "gets: +override for a negotiated price, -N% for a discount on the total.\n\n"
    "'openai-meter prices check' compares the catalog with the genai-prices package "
    "(pip install 'openai-meter[check]') and prints where they disagree (exit 1 if they do)."
)

_TABLE_DIMENSIONS = ("input", "cached_input", "cache_write", "output")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "prices",
        help="show the price catalog (or 'prices check' to compare it with genai-prices)",
        description=DESCRIPTION,
        formatter_class=_ParagraphsFormatter,
    )
    parser.add_argument(
        "model", nargs="?", help="model, snapshot or ft: name; the word 'check' runs the comparison"
    )
    parser.add_argument(
        "--at",
        metavar="DATE",
        type=parse_day,
        default=None,
        help="date (YYYY-MM-DD or ISO timestamp); default today (UTC)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config whose pricing section applies (default: $OPENAI_METER_CONFIG, if set)",
    )
    parser.set_defaults(func=run)


class _ParagraphsFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of the description to the terminal; keeps blank lines between them."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(_ParagraphsFormatter, self)._fill_text(part, width, indent)
            for part in text.split("\n\n")
        )


def configured_book(config_path: str | None, environ: Mapping[str, str]) -> PriceBook:
    """The price book ``serve`` would build: catalog + ``pricing`` settings (file < environment).

    Raises :class:`ConfigError` (bad file or key) or ``ValueError`` (bad override or discount).
    """
    from pricing.book import PriceBook
    from proxy.config import load_settings

    pricing = load_settings(config_path=config_path, environ=environ).pricing
    return PriceBook.load(
        overrides=pricing.overrides,
        discount_percent=pricing.discount_percent,
        model_discount_percent=pricing.model_discount_percent,
    )


def parse_day(text: str) -> date:
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


def run(
    args: argparse.Namespace,
    *,
    book: PriceBook | None = None,
    out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    from pricing.listing import price_list
    from proxy.config import ConfigError

    out = out or sys.stdout
    day: date = args.at or datetime.now(UTC).date()
    if book is None:
        try:
            book = configured_book(
                getattr(args, "config", None), os.environ if environ is None else environ
            )
        except (ConfigError, ValueError) as exc:
            print(f"openai-meter prices: {exc}", file=sys.stderr)
            return 2
    if args.model == "check":
        return _check(book, day, args.format, out)
    items = price_list(book, day, args.model)
    if args.model and not items:
        print(f"openai-meter prices: no price for {args.model!r} on {day}", file=sys.stderr)
        return 1
    if args.format == "json":
        import orjson

        out.write(
            orjson.dumps(
                {"at": day.isoformat(), "prices": items}, option=orjson.OPT_INDENT_2
            ).decode()
        )
        out.write("\n")
    else:
        out.write(render_table(items, day))
    return 0


def _other(rates: dict[str, Any]) -> str:
    parts = [
        f"{k}={v}" for k, v in rates.items() if k not in _TABLE_DIMENSIONS and isinstance(v, str)
    ]
    images = rates.get("per_image")
    if isinstance(images, dict):
        parts.append(f"{len(images)} image prices")
    return " ".join(parts)


def _configured(item: dict[str, Any]) -> str:
    """The price_ref suffix configuration gives this model (``+override``, ``-10%``), or ''."""
    suffix = "+override" if item.get("override") else ""
    if "discount_percent" in item:
        suffix += f"-{item['discount_percent']}%"
    return suffix


def render_table(items: list[dict[str, Any]], day: date) -> str:
    header: tuple[str, ...] = (
        "MODEL",
        "TIER",
        "INPUT",
        "CACHED",
        "CACHE WRITE",
        "OUTPUT",
        "OTHER",
        "SINCE",
    )
    configured = any(_configured(item) for item in items)
    if configured:
        header = (*header, "CONFIG")
    rows: list[tuple[str, ...]] = []
    for item in items:
        mark = (_configured(item),) if configured else ()
        groups = [("", item["tiers"])]
        if "long_context" in item:
            above = item["long_context"]["above_input_tokens"]
            groups.append((f">{above} ", item["long_context"]["tiers"]))
        if "fine_tuned" in item:
            groups.append(("ft ", item["fine_tuned"]["tiers"]))
        for label, tiers in groups:
            for tier, rates in tiers.items():
                rows.append(
                    (
                        item["model"],
                        f"{label}{tier}",
                        *(rates.get(d, "-") for d in _TABLE_DIMENSIONS),
                        _other(rates),
                        item["effective_from"],
                        *mark,
                    )
                )
        for unit, tool in item.get("tools", {}).items():
            tool_row = ("", "", "", "", f"{unit}={tool['rate']}/{tool['per']}", "", *mark)
            rows.append((item["model"], "tool", *tool_row))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"Prices in effect on {day} (USD per 1M tokens unless noted)"]
    for row in [header, *rows]:
        lines.append(
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
    if configured:
        lines.append(
            "CONFIG: price_ref suffix from the configuration: +override = pricing.overrides price "
            "(listed above), -N% = discount on each call's total"
        )
    return "\n".join(lines) + "\n"


def _check(book: PriceBook, day: date, fmt: str, out: TextIO) -> int:
    import orjson

    from pricing.check import CheckUnavailable, compare

    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    try:
        result = compare(book, at)
    except CheckUnavailable as exc:
        print(f"openai-meter prices check: {exc}", file=sys.stderr)
        return 2
    if fmt == "json":
        payload = {
            "at": day.isoformat(),
            "compared_models": list(result.compared_models),
            "unknown_to_genai_prices": list(result.unknown_to_them),
            "compared_prices": result.compared_prices,
            "disagreements": [
                {
                    "model": d.model,
                    "entry": d.entry,
                    "tier": d.tier,
                    "dimension": d.dimension,
                    "ours": f"{d.ours:f}",
                    "genai_prices": f"{d.theirs:f}",
                    "genai_prices_model": d.their_model,
                }
                for d in result.disagreements
            ],
        }
        out.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(
            f"Compared {result.compared_prices} prices of {len(result.compared_models)} models "
            f"with genai-prices as of {day}; {len(result.unknown_to_them)} catalog models unknown to it.\n"
        )
        if not result.disagreements:
            out.write("No disagreements.\n")
        for d in result.disagreements:
            out.write(
                f"DISAGREE {d.model} {d.tier} {d.dimension}: ours {d.ours:f} ({d.entry}), "
                f"genai-prices {d.theirs:f} ({d.their_model})\n"
            )
    return 1 if result.disagreements else 0
