"""What-if and savings columns for spend reports: one read side for the CLI, the JSON and the page.

:func:`load_extras` reads the window's calls (:func:`storage.whatif.call_groups`, grouped like the
report) and prices them with :mod:`pricing.whatif`; :func:`extend_json`, :func:`extended_csv` and
:func:`extended_table` add the result to the report's own three formats. Per report row and lever:

* ``cost_usd`` – what the re-priced calls would have cost;
* ``actual_usd`` – what those same calls cost (the ledger's amounts), so the difference compares
  like with like;
* ``difference_usd`` = ``cost_usd - actual_usd`` (negative: the lever would have saved money);
* ``repriced_requests`` and ``not_repriced`` (reason -> calls): every call is in one of the two.

Savings already made per row: ``cached_input_usd``, ``batch_usd``, ``flex_usd``, their sum, and
the cached share of input tokens (4 decimal places, ``null`` with no input tokens).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.book import PriceBook
from pricing.usage import Usage
from pricing.whatif import (
    SAVINGS_KINDS,
    UNPRICED_IN_LEDGER,
    Calls,
    Lever,
    reprice,
    savings,
)
from proxy.admin.reporting import (
    METRICS,
    TOTAL_LABEL,
    SpendReport,
    Totals,
    Window,
    csv_text,
    money,
    to_json_obj,
    to_table,
)
from storage.whatif import CallGroup, call_groups

Group = tuple[str | None, ...]
SHARE_PLACES: Final = Decimal("0.0001")
_ZERO: Final = Decimal(0)


@dataclass(slots=True)
class LeverTotals:
    cost_usd: Decimal = _ZERO
    actual_usd: Decimal = _ZERO
    repriced_requests: int = 0
    not_repriced: dict[str, int] = field(default_factory=dict)

    @property
    def difference_usd(self) -> Decimal:
        return self.cost_usd - self.actual_usd

    @property
    def not_repriced_requests(self) -> int:
        return sum(self.not_repriced.values())

    def add(self, other: LeverTotals) -> None:
        self.cost_usd += other.cost_usd
        self.actual_usd += other.actual_usd
        self.repriced_requests += other.repriced_requests
        for reason, count in other.not_repriced.items():
            self.not_repriced[reason] = self.not_repriced.get(reason, 0) + count


@dataclass(slots=True)
class SavingsTotals:
    amounts: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(SAVINGS_KINDS, _ZERO))

    @property
    def total_usd(self) -> Decimal:
        return sum(self.amounts.values(), _ZERO)

    def add(self, other: SavingsTotals) -> None:
        for kind, amount in other.amounts.items():
            self.amounts[kind] += amount


@dataclass(slots=True)
class Extras:
    """What-if and savings per report group (same keys as the report's rows)."""

    levers: tuple[Lever, ...]
    with_savings: bool
    what_if: dict[Group, dict[str, LeverTotals]] = field(default_factory=dict)
    savings: dict[Group, SavingsTotals] = field(default_factory=dict)

    def lever_totals(self, group: Group) -> dict[str, LeverTotals]:
        return self.what_if.get(group) or {lever.name: LeverTotals() for lever in self.levers}

    def savings_of(self, group: Group) -> SavingsTotals:
        return self.savings.get(group) or SavingsTotals()

    def total_what_if(self) -> dict[str, LeverTotals]:
        out = {lever.name: LeverTotals() for lever in self.levers}
        for per_lever in self.what_if.values():
            for name, totals in per_lever.items():
                out[name].add(totals)
        return out

    def total_savings(self) -> SavingsTotals:
        out = SavingsTotals()
        for item in self.savings.values():
            out.add(item)
        return out


def usage_of(item: CallGroup) -> Usage:
    return Usage(**item.tokens, units=item.units)


def compute_extras(
    book: PriceBook,
    groups: Sequence[CallGroup],
    levers: Sequence[Lever],
    *,
    with_savings: bool,
) -> Extras:
    """Pure: price every call group under every lever, and its savings."""
    extras = Extras(tuple(levers), with_savings)
    for item in groups:
        calls = Calls(
            usage=usage_of(item),
            model=item.model,
            tier=item.service_tier,
            endpoint=item.endpoint,
            at=item.at,
            count=item.count,
            summed=item.summed,
        )
        if levers:
            per_lever = extras.what_if.get(item.group)
            if per_lever is None:
                per_lever = extras.what_if[item.group] = {x.name: LeverTotals() for x in levers}
            for lever in levers:
                totals = per_lever[lever.name]
                if item.cost_usd is None:
                    reason = (
                        f"{UNPRICED_IN_LEDGER} ({item.unpriced_reason or 'no reason recorded'})"
                    )
                    totals.not_repriced[reason] = totals.not_repriced.get(reason, 0) + item.count
                    continue
                result = reprice(book, lever, calls)
                if result.cost is None:
                    reason = result.reason or "no price"
                    totals.not_repriced[reason] = totals.not_repriced.get(reason, 0) + item.count
                else:
                    totals.cost_usd += result.cost
                    totals.actual_usd += item.cost_usd
                    totals.repriced_requests += item.count
        if with_savings and item.cost_usd is not None:
            found = savings(book, calls)
            if found:
                bucket = extras.savings.get(item.group)
                if bucket is None:
                    bucket = extras.savings[item.group] = SavingsTotals()
                for kind, amount in found.items():
                    bucket.amounts[kind] += amount
    return extras


async def load_extras(
    engine: AsyncEngine,
    book: PriceBook,
    window: Window,
    by: tuple[str, ...],
    levers: Sequence[Lever],
    *,
    with_savings: bool,
    filters: Mapping[str, str] | None = None,
) -> Extras:
    groups = await call_groups(
        engine,
        since=window.since,
        until=window.until,
        by=by,
        filters=filters,
        long_floor=book.long_context_floor(),
        per_call=book.has_discount(),
        boundaries=[datetime.combine(d, time(0), tzinfo=UTC) for d in book.change_days()],
    )
    return compute_extras(book, groups, levers, with_savings=with_savings)


# ---------------------------------------------------------------- formats


def share(cached: int, total: int) -> str | None:
    """Cached share of input tokens, 4 places (half-even); ``None`` without input tokens."""
    if not total:
        return None
    return f"{(Decimal(cached) / Decimal(total)).quantize(SHARE_PLACES, ROUND_HALF_EVEN):f}"


def lever_json(totals: LeverTotals) -> dict[str, Any]:
    return {
        "cost_usd": money(totals.cost_usd),
        "actual_usd": money(totals.actual_usd),
        "difference_usd": money(totals.difference_usd),
        "repriced_requests": totals.repriced_requests,
        "not_repriced_requests": totals.not_repriced_requests,
        "not_repriced": dict(sorted(totals.not_repriced.items())),
    }


def savings_json(item: SavingsTotals, totals: Totals) -> dict[str, Any]:
    out: dict[str, Any] = {f"{kind}_usd": money(item.amounts[kind]) for kind in SAVINGS_KINDS}
    out["total_usd"] = money(item.total_usd)
    out["cached_input_share"] = share(totals.cached_input_tokens, totals.input_tokens)
    return out


def extend_json(report: SpendReport, extras: Extras) -> dict[str, Any]:
    """The report's JSON object with ``what_if`` / ``savings`` added to every row and the total."""
    obj = to_json_obj(report)
    if extras.levers:
        obj["what_if"] = [lever.name for lever in extras.levers]
    for row, item in zip(report.rows, obj["rows"], strict=True):
        if extras.levers:
            item["what_if"] = {
                name: lever_json(t) for name, t in extras.lever_totals(row.group).items()
            }
        if extras.with_savings:
            item["savings"] = savings_json(extras.savings_of(row.group), row.totals)
    if extras.levers:
        obj["total"]["what_if"] = {
            name: lever_json(t) for name, t in extras.total_what_if().items()
        }
    if extras.with_savings:
        obj["total"]["savings"] = savings_json(extras.total_savings(), report.total)
    return obj


def _extra_headings(extras: Extras) -> list[str]:
    headings: list[str] = []
    for lever in extras.levers:
        headings += [
            f"what_if[{lever.name}].cost_usd",
            f"what_if[{lever.name}].actual_usd",
            f"what_if[{lever.name}].difference_usd",
            f"what_if[{lever.name}].not_repriced_requests",
        ]
    if extras.with_savings:
        headings += [f"savings.{kind}_usd" for kind in SAVINGS_KINDS]
        headings += ["savings.total_usd", "cached_input_share"]
    return headings


def _extra_cells(
    per_lever: Mapping[str, LeverTotals], item: SavingsTotals, totals: Totals, extras: Extras
) -> list[str]:
    cells: list[str] = []
    for lever in extras.levers:
        t = per_lever[lever.name]
        cells += [
            money(t.cost_usd),
            money(t.actual_usd),
            money(t.difference_usd),
            str(t.not_repriced_requests),
        ]
    if extras.with_savings:
        cells += [money(item.amounts[kind]) for kind in SAVINGS_KINDS]
        cells += [
            money(item.total_usd),
            share(totals.cached_input_tokens, totals.input_tokens) or "",
        ]
    return cells


def _metric_cells(totals: Totals) -> list[str]:
    return [money(totals.cost_usd) if m == "cost_usd" else str(getattr(totals, m)) for m in METRICS]


def extended_csv(report: SpendReport, extras: Extras) -> str:
    """The report's CSV with the what-if / savings columns appended (and on the TOTAL line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.by, *METRICS, *_extra_headings(extras)])
    for row in report.rows:
        writer.writerow(
            [
                *(csv_text(v) for v in row.group),
                *_metric_cells(row.totals),
                *_extra_cells(
                    extras.lever_totals(row.group), extras.savings_of(row.group), row.totals, extras
                ),
            ]
        )
    label = [TOTAL_LABEL, *([""] * (len(report.by) - 1))] if report.by else []
    writer.writerow(
        [
            *label,
            *_metric_cells(report.total),
            *_extra_cells(extras.total_what_if(), extras.total_savings(), report.total, extras),
        ]
    )
    return buffer.getvalue()


def _aligned(headings: list[str], body: list[list[str]], left: int) -> list[str]:
    widths = [len(h) for h in headings]
    for line in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, line, strict=True)]

    def line_of(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line_of(headings), "  ".join("-" * w for w in widths), *map(line_of, body)]


def _lever_line(label: Sequence[str], t: LeverTotals) -> list[str]:
    return [
        *label,
        money(t.actual_usd),
        money(t.cost_usd),
        money(t.difference_usd),
        str(t.repriced_requests),
        str(t.not_repriced_requests),
    ]


def extended_table(report: SpendReport, extras: Extras) -> str:
    """The report's table, then one what-if table per lever (with reasons) and the savings."""
    parts = [to_table(report)]
    by = list(report.by) or [""]
    lever_sums = extras.total_what_if()
    for lever in extras.levers:
        total = lever_sums[lever.name]
        body = [
            _lever_line(
                ["-" if v is None else v for v in row.group],
                extras.lever_totals(row.group)[lever.name],
            )
            for row in (report.rows if report.by else ())
        ]
        body.append(_lever_line([TOTAL_LABEL, *([""] * (len(by) - 1))], total))
        headings = [*by, "actual_usd", "what_if_usd", "difference_usd", "repriced", "not_repriced"]
        lines = [f"\nwhat if {lever.name} (same calls, prices as of each call's day)"]
        lines += _aligned(headings, body, len(by))
        for reason, count in sorted(total.not_repriced.items()):
            lines.append(f"  not re-priced: {count} call(s): {reason}")
        parts.append("\n".join(lines) + "\n")
    if extras.with_savings:
        body = []
        rows = [(r.group, r.totals) for r in report.rows] if report.by else []
        for key, totals in rows:
            item = extras.savings_of(key)
            body.append(
                [
                    *("-" if v is None else v for v in key),
                    *(money(item.amounts[k]) for k in SAVINGS_KINDS),
                    money(item.total_usd),
                    share(totals.cached_input_tokens, totals.input_tokens) or "-",
                ]
            )
        item = extras.total_savings()
        body.append(
            [
                TOTAL_LABEL,
                *([""] * (len(by) - 1)),
                *(money(item.amounts[k]) for k in SAVINGS_KINDS),
                money(item.total_usd),
                share(report.total.cached_input_tokens, report.total.input_tokens) or "-",
            ]
        )
        headings = [*by, *(f"{k}_saved" for k in SAVINGS_KINDS), "total_saved", "cached_share"]
        lines = ["\nsavings already made (cached input vs full input; batch/flex vs standard)"]
        lines += _aligned(headings, body, len(by))
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def render_extended(report: SpendReport, extras: Extras, fmt: str) -> str:
    if fmt == "json":
        obj = extend_json(report, extras)
        return (orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n").decode("utf-8")
    if fmt == "csv":
        return extended_csv(report, extras)
    return extended_table(report, extras)
