"""Spend reports, the pure part: time windows, grouping keys, rows and their three formats.

Shared by ``openai-meter report`` and ``GET /meter/spend``; the SQL lives in
:mod:`storage.reports`. Money stays :class:`~decimal.Decimal` end to end and leaves as a decimal
string, never rounded: a report's total is the exact sum of its rows, which is the exact sum of the
ledger's ``cost_usd`` over the window.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import orjson

from proxy.teams.fingerprints import scrubbed, stored_tag_key
from storage.queries import COLUMN_DIMENSIONS, TAG_PREFIX

Format = Literal["table", "csv", "json"]
FORMATS: Final[tuple[str, ...]] = ("table", "csv", "json")

# Ledger columns a report can group by (COLUMN_DIMENSIONS, TAG_PREFIX) come from the query layer.
TIME_DIMENSIONS: Final[tuple[str, ...]] = ("day", "month")
MAX_DIMENSIONS: Final = 6

METRICS: Final[tuple[str, ...]] = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_requests",
    "estimated_requests",
)
_TABLE_HEADINGS: Final[dict[str, str]] = {
    "requests": "requests",
    "input_tokens": "input",
    "cached_input_tokens": "cached",
    "output_tokens": "output",
    "reasoning_tokens": "reasoning",
    "cost_usd": "cost_usd",
    "unpriced_requests": "unpriced",
    "estimated_requests": "estimated",
}
TOTAL_LABEL: Final = "TOTAL"

_RELATIVE_RE: Final = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS: Final[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_RE: Final = re.compile(r"\d{4}-\d{2}")
_EPOCH_RE: Final = re.compile(r"\d{9,11}(\.\d+)?")


class ReportError(ValueError):
    """A bad report parameter; the message is meant for the user (CLI) or client (HTTP 400)."""


# ---------------------------------------------------------------- time


def month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def parse_instant(text: str, now: datetime) -> datetime:
    """``7d`` / ``24h`` / ``90m`` / ``2w`` (before ``now``), ``2026-11-01`` (UTC midnight),
    ``2026-11`` (first of the month), ISO timestamps (naive = UTC), unix seconds, ``today``,
    ``now``. Always returns an aware UTC datetime."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return now.astimezone(UTC)
    if lowered == "today":
        return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    relative = _RELATIVE_RE.fullmatch(lowered)
    if relative is not None:
        amount, unit = int(relative.group(1)), relative.group(2)
        try:
            return now.astimezone(UTC) - timedelta(seconds=amount * _UNIT_SECONDS[unit])
        except OverflowError as exc:
            raise ReportError(f"time span {text!r} is too long") from exc
    try:
        if _DATE_RE.fullmatch(value):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        if _MONTH_RE.fullmatch(value):
            return datetime.fromisoformat(value + "-01").replace(tzinfo=UTC)
        if _EPOCH_RE.fullmatch(value):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ReportError(
            f"cannot read {text!r} as a time: use a date (2026-11-01), a timestamp "
            "(2026-11-01T12:00:00Z), unix seconds, or a span before now (7d, 24h, 30m, 2w)"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+14:00 is before the first representable UTC
        raise ReportError(f"time {text!r} is out of range") from exc


@dataclass(frozen=True, slots=True)
class Window:
    """``[since, until)``: since inclusive, until exclusive."""

    since: datetime
    until: datetime


def resolve_window(since: str | None, until: str | None, now: datetime) -> Window:
    """Defaults: from the start of the current UTC month until ``now``."""
    start = parse_instant(since, now) if since else month_start(now)
    end = parse_instant(until, now) if until else now.astimezone(UTC)
    if start > end:
        raise ReportError(f"since ({iso(start)}) is after until ({iso(end)})")
    return Window(start, end)


def _to_second(moment: datetime) -> str:
    """For a human header: UTC to the second (the JSON keeps every microsecond)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with a ``Z``; microseconds only when there are some."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


# ---------------------------------------------------------------- grouping


def parse_by(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``team,model,tag:env`` -> ``("team", "model", "tag:env")``, validated."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    dims: list[str] = []
    for raw in items:
        dim = raw.strip()
        if not dim:
            continue
        if dim.startswith(TAG_PREFIX):
            key = stored_tag_key(dim[len(TAG_PREFIX) :])
            if key is None:
                raise ReportError(
                    f"--by {scrubbed(dim)!r}: a tag key is 1-64 of letters, digits, '_.-' (or "
                    "the sha256: fingerprint a key-like key is stored as)"
                )
            dim = TAG_PREFIX + key  # a key-like key: the fingerprint it was stored as
        elif dim not in COLUMN_DIMENSIONS and dim not in TIME_DIMENSIONS:
            allowed = ", ".join((*COLUMN_DIMENSIONS, *TIME_DIMENSIONS, "tag:KEY"))
            raise ReportError(f"cannot group by {dim!r}; choose from {allowed}")
        if dim in dims:
            raise ReportError(f"--by names {dim!r} twice")
        dims.append(dim)
    if len(dims) > MAX_DIMENSIONS:
        raise ReportError(f"group by at most {MAX_DIMENSIONS} dimensions")
    return tuple(dims)


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0
    estimated_requests: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, m) + getattr(other, m) for m in METRICS))


@dataclass(frozen=True, slots=True)
class SpendRow:
    group: tuple[str | None, ...]
    totals: Totals


@dataclass(frozen=True, slots=True)
class RejectedSpend:
    """Dead-lettered records started in the window (``ledger_rejected``: not in the rows/total)."""

    requests: int
    cost_usd: Decimal  # of those whose cost is known


@dataclass(frozen=True, slots=True)
class SpendReport:
    window: Window
    by: tuple[str, ...]
    rows: tuple[SpendRow, ...] = field(default_factory=tuple)
    rejected: RejectedSpend | None = None

    @property
    def total(self) -> Totals:
        total = Totals()
        for row in self.rows:
            total = total + row.totals
        return total


def _sort_key(row: SpendRow) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in row.group)


def build_report(window: Window, by: tuple[str, ...], rows: Iterable[SpendRow]) -> SpendReport:
    """Rows merged by group (a backend may return one group in pieces) and sorted by group."""
    merged: dict[tuple[str | None, ...], Totals] = {}
    for row in rows:
        merged[row.group] = merged.get(row.group, Totals()) + row.totals
    ordered = sorted((SpendRow(g, t) for g, t in merged.items()), key=_sort_key)
    return SpendReport(window=window, by=by, rows=tuple(ordered))


# ---------------------------------------------------------------- formats


MIN_MONEY_PLACES: Final = 6


def money(value: Decimal, places: int | None = None) -> str:
    """Exact decimal string. With ``places`` (a report's :func:`money_places`): exactly that many
    decimal places. Without: at least 6 (``0.002340``), more when the value has them."""
    if places is not None:
        return f"{value.quantize(Decimal(1).scaleb(-places)):f}"
    exact = -value.normalize().as_tuple().exponent  # type: ignore[operator]
    if exact <= MIN_MONEY_PLACES:
        return f"{value.quantize(Decimal('0.000001')):f}"
    return f"{value.normalize():f}"


def money_places(values: Iterable[Decimal]) -> int:
    """One number of decimal places for every money value of a report: at least 6, and as many as
    its most precise value needs (so each stays exact; the ledger keeps at most 10)."""
    places = MIN_MONEY_PLACES
    for value in values:
        if value.is_finite():
            places = max(places, -value.normalize().as_tuple().exponent)  # type: ignore[operator]
    return places


def report_places(report: SpendReport) -> int:
    return money_places([*(row.totals.cost_usd for row in report.rows), report.total.cost_usd])


def _metrics_json(totals: Totals, places: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in METRICS:
        value = getattr(totals, name)
        out[name] = money(value, places) if name == "cost_usd" else value
    return out


def to_json_obj(report: SpendReport) -> dict[str, Any]:
    places = report_places(report)
    rows = []
    for row in report.rows:
        item: dict[str, Any] = dict(zip(report.by, row.group, strict=True))
        item.update(_metrics_json(row.totals, places))
        rows.append(item)
    out: dict[str, Any] = {
        "since": iso(report.window.since),
        "until": iso(report.window.until),
        "by": list(report.by),
        "rows": rows,
        "total": _metrics_json(report.total, places),
    }
    if report.rejected is not None:  # present only when records were dead-lettered
        out["rejected"] = {
            "requests": report.rejected.requests,
            "cost_usd": money(report.rejected.cost_usd),
        }
    return out


def to_json(report: SpendReport) -> bytes:
    return orjson.dumps(to_json_obj(report), option=orjson.OPT_INDENT_2) + b"\n"


def _cells(totals: Totals, places: int) -> list[str]:
    return [
        money(totals.cost_usd, places) if m == "cost_usd" else str(getattr(totals, m))
        for m in METRICS
    ]


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str | None) -> str:
    """A group value (team, user, tag, ...) as a CSV cell a spreadsheet shows as text: values a
    client chose (``user``, ``X-Meter-Tags``) that start like a formula get a leading ``'``
    (OWASP's CSV-injection rule); empty for None."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def to_csv(report: SpendReport) -> str:
    """Header, one line per row, then a ``TOTAL`` line (first group column) when grouped."""
    places = report_places(report)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.by, *METRICS])
    for row in report.rows:
        writer.writerow([*(csv_text(v) for v in row.group), *_cells(row.totals, places)])
    if report.by or not report.rows:
        label = [TOTAL_LABEL, *([""] * (len(report.by) - 1))] if report.by else []
        writer.writerow([*label, *_cells(report.total, places)])
    return buffer.getvalue()


def to_table(report: SpendReport) -> str:
    """Aligned text for humans: group columns left, numbers right, a rule, then the TOTAL line.

    Ungrouped, the one line is the total itself.
    """
    places = report_places(report)
    by = report.by or ("",)
    groups = len(by)
    headings = [*by, *(_TABLE_HEADINGS[m] for m in METRICS)]
    body = (
        [
            [*("-" if v is None else v for v in r.group), *_cells(r.totals, places)]
            for r in report.rows
        ]
        if report.by
        else []
    )
    total = [TOTAL_LABEL, *([""] * (groups - 1)), *_cells(report.total, places)]
    widths = [len(h) for h in headings]
    for line in [*body, total]:
        widths = [max(w, len(cell)) for w, cell in zip(widths, line, strict=True)]

    def line_of(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if index < groups else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    title = (
        f"spend {_to_second(report.window.since)} .. {_to_second(report.window.until)} "
        "(until exclusive)"
    )
    lines = [title, line_of(headings), "  ".join("-" * w for w in widths)]
    lines.extend(line_of(line) for line in body)
    if body:
        lines.append("  ".join("=" * w for w in widths))
    lines.append(line_of(total))
    if report.rejected is not None:
        lines.append(
            f"rejected (dead-lettered, not in the total): {report.rejected.requests} calls, "
            f"known cost {money(report.rejected.cost_usd)} USD -- see 'openai-meter db rejected'"
        )
    return "\n".join(lines) + "\n"


def render(report: SpendReport, fmt: str) -> str:
    if fmt == "json":
        return to_json(report).decode("utf-8")
    if fmt == "csv":
        return to_csv(report)
    if fmt == "table":
        return to_table(report)
    raise ReportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
