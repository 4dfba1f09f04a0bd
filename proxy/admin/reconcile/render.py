"""A :class:`~proxy.admin.reconcile.compare.Reconciliation` as JSON, CSV or an aligned table.

``by`` (a subset of ``day, project, model``, in that order) rolls rows up: usage rows by all
of ``by``, cost rows by the ``day`` / ``project`` part of it (OpenAI bills per project and day).
Money leaves as exact decimal strings; ratios with 4 places.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import orjson

from proxy.admin.reconcile.compare import COUNTERS, NO_PROJECT, Cause, Reconciliation, ratio
from proxy.admin.reporting import ReportError, iso, money

DIMENSIONS: Final[tuple[str, ...]] = ("day", "project", "model")
FORMATS: Final[tuple[str, ...]] = ("table", "csv", "json")
_TABLE_COUNTERS: Final[dict[str, str]] = {
    "requests": "requests",
    "input_tokens": "input",
    "cached_input_tokens": "cached",
    "output_tokens": "output",
    "audio_input_tokens": "audio_in",
    "audio_output_tokens": "audio_out",
    "image_input_tokens": "image_in",
    "image_output_tokens": "image_out",
}


def parse_by(text: str | Sequence[str] | None) -> tuple[str, ...]:
    items = [text] if isinstance(text, str) else list(text or [])
    dims = {d.strip() for item in items for d in item.split(",") if d.strip()}
    unknown = dims - set(DIMENSIONS)
    if unknown:
        raise ReportError(
            f"cannot group by {', '.join(sorted(unknown))}; choose from day, project, model"
        )
    return tuple(d for d in DIMENSIONS if d in dims) if dims else DIMENSIONS


@dataclass(slots=True)
class UsageLine:
    group: tuple[str, ...]
    ledger: dict[str, int]
    openai: dict[str, int]
    restating: bool = True
    causes: list[Cause] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.ledger == self.openai


@dataclass(slots=True)
class CostLine:
    group: tuple[str, ...]
    billed: Decimal = Decimal(0)
    ledger: Decimal = Decimal(0)
    within: bool = True
    restating: bool = True
    causes: list[Cause] = field(default_factory=list)
    matches: bool = True


def _values(
    day: Any, project: str | None, model: str | None, dims: Iterable[str]
) -> tuple[str, ...]:
    found = {"day": day.isoformat(), "project": project or NO_PROJECT, "model": model or "-"}
    return tuple(found[d] for d in dims)


def _add_causes(into: list[Cause], causes: Iterable[Cause]) -> None:
    for cause in causes:
        if cause not in into:
            into.append(cause)


def usage_lines(rec: Reconciliation, by: tuple[str, ...]) -> list[UsageLine]:
    lines: dict[tuple[str, ...], UsageLine] = {}
    for row in rec.rows:
        key = _values(row.day, row.project, row.model, by)
        line = lines.get(key)
        if line is None:
            line = lines[key] = UsageLine(
                key, dict.fromkeys(COUNTERS, 0), dict.fromkeys(COUNTERS, 0)
            )
        for name in COUNTERS:
            line.ledger[name] += row.ledger.get(name, 0)
            line.openai[name] += row.openai.get(name, 0)
        line.restating = line.restating and row.restating
        _add_causes(line.causes, row.causes)
    return list(lines.values())


def cost_lines(rec: Reconciliation, by: tuple[str, ...]) -> list[CostLine]:
    dims = tuple(d for d in by if d != "model")
    lines: dict[tuple[str, ...], CostLine] = {}
    for p in rec.projects:
        key = _values(p.day, p.project, None, dims)
        line = lines.setdefault(key, CostLine(key))
        line.billed += p.billed_usd
        line.ledger += p.ledger_usd
        line.within = line.within and p.within
        line.matches = line.matches and p.matches
        line.restating = line.restating and p.restating
        _add_causes(line.causes, p.causes)
    return list(lines.values())


def _ratio_text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


def _status(equal: bool, restating: bool) -> str:
    if equal:
        return "ok"
    return "restating" if restating else "DIFFERS"


def to_json_obj(rec: Reconciliation, by: tuple[str, ...] = DIMENSIONS) -> dict[str, Any]:
    cost_dims = tuple(d for d in by if d != "model")
    return {
        "since": rec.since.isoformat(),
        "until": rec.until.isoformat(),
        "generated_at": iso(rec.generated_at),
        "by": list(by),
        "restate_days": rec.restate_days,
        "tolerance_percent": f"{rec.tolerance_percent:f}",
        "admin_key": rec.admin_key,
        "ok": rec.ok,
        "total": {
            "billed_usd": money(rec.billed_usd),
            "ledger_usd": money(rec.ledger_usd),
            "captured_ratio": _ratio_text(rec.captured_ratio),
        },
        "usage": [
            {
                **dict(zip(by, line.group, strict=True)),
                "ledger": line.ledger,
                "openai": line.openai,
                "equal": line.equal,
                "restating": line.restating,
                "causes": [{"code": c.code, "text": c.text} for c in line.causes],
            }
            for line in usage_lines(rec, by)
        ],
        "cost": [
            {
                **dict(zip(cost_dims, line.group, strict=True)),
                "billed_usd": money(line.billed),
                "ledger_usd": money(line.ledger),
                "captured_ratio": _ratio_text(ratio(line.ledger, line.billed)),
                "within_tolerance": line.within,
                "matches": line.matches,
                "restating": line.restating,
                "causes": [{"code": c.code, "text": c.text} for c in line.causes],
            }
            for line in cost_lines(rec, by)
        ],
        "notes": list(rec.notes),
    }


def to_json(rec: Reconciliation, by: tuple[str, ...] = DIMENSIONS) -> str:
    return orjson.dumps(to_json_obj(rec, by), option=orjson.OPT_INDENT_2).decode() + "\n"


def to_csv(rec: Reconciliation, by: tuple[str, ...] = DIMENSIONS) -> str:
    """One line per usage group (``level=usage``) then one per cost group (``level=cost``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    counters = [f"{side}_{name}" for name in COUNTERS for side in ("ledger", "openai")]
    writer.writerow(
        ["level", *by, *counters, "billed_usd", "ledger_usd", "captured_ratio", "status", "causes"]
    )
    for line in usage_lines(rec, by):
        cells = [
            str(getattr(line, side)[name]) for name in COUNTERS for side in ("ledger", "openai")
        ]
        writer.writerow(
            [
                "usage",
                *line.group,
                *cells,
                "",
                "",
                "",
                _status(line.equal, line.restating),
                "; ".join(c.text for c in line.causes),
            ]
        )
    cost_dims = tuple(d for d in by if d != "model")
    for cost in cost_lines(rec, by):
        group = dict(zip(cost_dims, cost.group, strict=True))
        writer.writerow(
            [
                "cost",
                *(group.get(d, "") for d in by),
                *([""] * len(counters)),
                money(cost.billed),
                money(cost.ledger),
                _ratio_text(ratio(cost.ledger, cost.billed)) or "",
                _status(cost.matches, cost.restating),
                "; ".join(c.text for c in cost.causes),
            ]
        )
    return buffer.getvalue()


def _percent(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _align(rows: list[list[str]], left: int) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def to_table(rec: Reconciliation, by: tuple[str, ...] = DIMENSIONS) -> str:
    lines = [
        f"reconcile {rec.since.isoformat()} .. {rec.until.isoformat()} (UTC days, until exclusive); "
        f"admin key {rec.admin_key or '-'}",
        f"OpenAI restates the last {rec.restate_days} days; cost tolerance "
        f"{rec.tolerance_percent:f}%, tokens exact. Cells read ledger/openai where they differ.",
        "",
    ]
    usage = usage_lines(rec, by)
    if usage:
        rows = [[*by, *_TABLE_COUNTERS.values(), "status"]]
        for line in usage:
            cells = []
            for name in _TABLE_COUNTERS:
                mine, theirs = line.ledger[name], line.openai[name]
                cells.append(str(mine) if mine == theirs else f"{mine}/{theirs}")
            rows.append([*line.group, *cells, _status(line.equal, line.restating)])
        lines.extend(_align(rows, len(by)))
        lines.append("")
    cost_dims = tuple(d for d in by if d != "model")
    costs = cost_lines(rec, by)
    if costs:
        rows = [[*cost_dims, "billed_usd", "ledger_usd", "captured", "status"]]
        for cost in costs:
            rows.append(
                [
                    *cost.group,
                    money(cost.billed),
                    money(cost.ledger),
                    _percent(ratio(cost.ledger, cost.billed)),
                    _status(cost.matches, cost.restating),
                ]
            )
        lines.extend(_align(rows, len(cost_dims)))
        lines.append("")
    lines.append(
        f"TOTAL billed {money(rec.billed_usd)} USD, ledger {money(rec.ledger_usd)} USD, "
        f"captured {_percent(rec.captured_ratio)}: "
        + ("MATCHES (within tolerance)" if rec.ok else "DOES NOT MATCH")
    )
    explained = [(line.group, line.causes) for line in usage if line.causes] + [
        (cost.group, cost.causes) for cost in costs if cost.causes
    ]
    if explained:
        lines.extend(["", "why:"])
        said: list[str] = []
        for group, causes in explained:
            for cause in causes:
                # A project's cost line repeats its model lines' causes: say each once.
                if cause.code != "restating" and any(cause.text.endswith(s) for s in said):
                    continue
                said.append(cause.text)
                lines.append(f"  {' '.join(group) or 'all'}: [{cause.code}] {cause.text}")
    if rec.notes:
        lines.extend(["", *(f"note: {note}" for note in rec.notes)])
    return "\n".join(lines) + "\n"


def render(rec: Reconciliation, fmt: str, by: tuple[str, ...] = DIMENSIONS) -> str:
    if fmt == "json":
        return to_json(rec, by)
    if fmt == "csv":
        return to_csv(rec, by)
    if fmt == "table":
        return to_table(rec, by)
    raise ReportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
