"""The comparison (pure): equal sides match exactly; every kind of difference gets its cause; the
tolerance decides the outcome; restating days never fail; rendering keeps money exact."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin.reconcile.compare import (
    COUNTERS,
    LedgerFacts,
    LedgerGroup,
    Reconciliation,
    compare,
)
from proxy.admin.reconcile.render import parse_by, render, to_json_obj
from proxy.admin.reconcile.shapes import CostResult, UsageResult
from proxy.admin.reporting import ReportError

NOW = datetime(2026, 11, 29, 10, tzinfo=UTC)
D1, D2 = date(2026, 11, 20), date(2026, 11, 21)
MODEL = "gpt-4o-mini-2024-07-18"


def usage(day: date, project: str | None, requests: int, tokens: int, **more: int) -> UsageResult:
    counts = {"requests": requests, "input_tokens": tokens, "output_tokens": tokens // 2, **more}
    return UsageResult("completions", day, project, MODEL, "key_x", counts)


def group(
    day: date, project: str | None, requests: int, tokens: int, cost: str, **facts: int
) -> LedgerGroup:
    counts = {"requests": requests, "input_tokens": tokens, "output_tokens": tokens // 2}
    return LedgerGroup(day, project, MODEL, counts, Decimal(cost), **facts)


def run(
    theirs: list[UsageResult],
    billed: list[CostResult],
    ours: list[LedgerGroup],
    *,
    seen: set[str | None] | None = None,
    dead: dict[date, int] | None = None,
    restate_days: int = 0,
    tolerance: str = "1",
    default_project: str | None = None,
) -> Reconciliation:
    return compare(
        usage=theirs,
        costs=billed,
        ledger=LedgerFacts(
            tuple(ours), frozenset(seen if seen is not None else {g.project for g in ours}), dead
        ),
        since=D1,
        until=date(2026, 11, 30),
        now=NOW,
        restate_days=restate_days,
        tolerance_percent=Decimal(tolerance),
        default_project=default_project,
    )


def codes(rec: Reconciliation) -> set[str]:
    return {c.code for r in rec.rows for c in r.causes} | {
        c.code for p in rec.projects for c in p.causes
    }


def test_equal_sides_match() -> None:
    rec = run(
        [usage(D1, "p", 3, 30)],
        [CostResult(D1, "p", None, Decimal("0.1"))],
        [group(D1, "p", 3, 30, "0.1")],
    )
    assert rec.ok and rec.captured_ratio == Decimal("1.0000") and not codes(rec)


def test_a_project_the_proxy_never_saw_went_around_it() -> None:
    rec = run(
        [usage(D1, "p", 3, 30), usage(D1, "shadow", 4, 40)],
        [CostResult(D1, "p", None, Decimal("0.1")), CostResult(D1, "shadow", None, Decimal("1"))],
        [group(D1, "p", 3, 30, "0.1")],
    )
    assert not rec.ok and codes(rec) == {"around_proxy"}
    shadow = next(p for p in rec.projects if p.project == "shadow")
    assert shadow.captured_ratio == Decimal("0.0000") and not shadow.within
    assert "key_x" in shadow.causes[0].text


def test_missing_calls_in_a_seen_project_name_dead_letters_and_outcomes() -> None:
    rec = run(
        [usage(D1, "p", 5, 50)],
        [CostResult(D1, "p", None, Decimal("0.5"))],
        [group(D1, "p", 3, 30, "0.3", timeouts=1, disconnects=2, estimated=1)],
        dead={D1: 2},
    )
    assert {
        "missing_calls",
        "dead_lettered",
        "upstream_timeout",
        "client_disconnect",
        "estimated",
    } <= codes(rec)
    assert not rec.ok


def test_unpriced_calls_explain_a_low_captured_ratio() -> None:
    rec = run(
        [usage(D1, "p", 3, 30)],
        [CostResult(D1, "p", None, Decimal("1"))],
        [group(D1, "p", 3, 30, "0.2", unpriced=2)],
    )
    assert codes(rec) == {"unpriced"} and not rec.ok


def test_restating_days_are_named_but_never_fail() -> None:
    today = NOW.date()
    rec = compare(
        usage=[usage(today, "p", 1, 10)],
        costs=[CostResult(today, "p", None, Decimal("0.05"))],
        ledger=LedgerFacts((group(today, "p", 2, 20, "0.1"),), frozenset({"p"})),
        since=D1,
        until=date(2026, 11, 30),
        now=NOW,
        restate_days=3,
        tolerance_percent=Decimal(1),
    )
    assert rec.ok and "restating" in codes(rec)


def test_restate_days_counts_today_as_the_first() -> None:
    def restating(days: int, day: date) -> bool:
        rec = compare(
            usage=[usage(day, "p", 1, 1)], costs=[], ledger=LedgerFacts((), frozenset()),
            since=D1, until=date(2026, 11, 30), now=NOW, restate_days=days,
            tolerance_percent=Decimal(1),
        )  # fmt: skip
        return rec.rows[0].restating

    assert restating(3, date(2026, 11, 27)) and not restating(3, date(2026, 11, 26))
    assert not restating(0, NOW.date()) and restating(1, NOW.date())


@pytest.mark.parametrize(
    ("tolerance", "ok"), [("1", True), ("0.5", True), ("0.49", False), ("0", False)]
)
def test_the_tolerance_is_a_percent_of_billed(tolerance: str, ok: bool) -> None:
    rec = run(
        [usage(D1, "p", 3, 30)],
        [CostResult(D1, "p", None, Decimal("100"))],
        [group(D1, "p", 3, 30, "99.5")],
        tolerance=tolerance,
    )
    assert rec.ok is ok
    assert rec.projects[0].captured_ratio == Decimal("0.9950")


def test_tokens_must_be_exact_even_within_cost_tolerance() -> None:
    rec = run(
        [usage(D1, "p", 3, 31)],
        [CostResult(D1, "p", None, Decimal("1"))],
        [group(D1, "p", 3, 30, "1")],
    )
    assert not rec.ok and codes(rec) == {"unexplained"}


def test_calls_without_a_project_header_count_for_the_default_project() -> None:
    theirs = [usage(D1, "proj_default", 3, 30)]
    billed = [CostResult(D1, "proj_default", None, Decimal("0.1"))]
    ours = [group(D1, None, 3, 30, "0.1")]
    assert run(theirs, billed, ours, default_project="proj_default").ok
    unmapped = run(theirs, billed, ours)
    assert not unmapped.ok and any("default_project" in n for n in unmapped.notes)


def test_results_outside_the_window_are_ignored() -> None:
    rec = run(
        [usage(date(2026, 10, 1), "p", 3, 30)],
        [CostResult(date(2026, 12, 1), "p", None, Decimal(1))],
        [],
    )
    assert rec.rows == () and rec.projects == () and rec.ok


def test_nothing_billed_but_ledger_spent_is_named() -> None:
    rec = run([usage(D1, "p", 1, 10)], [], [group(D1, "p", 1, 10, "0.3")])
    assert "not_billed_yet" in codes(rec) and not rec.ok
    assert rec.projects[0].captured_ratio is None


counts = st.integers(0, 10**12)


@given(
    st.lists(st.tuples(st.sampled_from([D1, D2]), st.sampled_from(["a", "b", None]), counts, counts,
                       st.decimals(0, 10**6, places=10)), max_size=12)
)  # fmt: skip
def test_a_ledger_compared_with_itself_always_matches(
    rows: list[tuple[date, str | None, int, int, Decimal]],
) -> None:
    theirs = [usage(d, p, r, t) for d, p, r, t, _ in rows]
    billed = [CostResult(d, p, None, c) for d, p, _, _, c in rows]
    ours = [group(d, p, r, t, str(c)) for d, p, r, t, c in rows]
    rec = run(theirs, billed, ours)
    assert rec.ok
    assert rec.billed_usd == rec.ledger_usd == sum((c for *_, c in rows), Decimal(0))
    # The JSON's money is exact decimal text that sums back to the same total.
    doc = to_json_obj(rec)
    assert sum(Decimal(c["billed_usd"]) for c in doc["cost"]) == rec.billed_usd


def test_render_formats_and_rollups() -> None:
    rec = run(
        [usage(D1, "p", 3, 30), usage(D2, "p", 1, 10), usage(D2, "shadow", 4, 40)],
        [CostResult(D1, "p", None, Decimal("0.1")), CostResult(D2, "shadow", None, Decimal("1"))],
        [group(D1, "p", 3, 30, "0.1"), group(D2, "p", 1, 10, "0")],
    )
    doc = json.loads(render(rec, "json", parse_by("project")))
    assert doc["by"] == ["project"] and {r["project"] for r in doc["usage"]} == {"p", "shadow"}
    p = next(r for r in doc["usage"] if r["project"] == "p")
    assert p["ledger"]["requests"] == p["openai"]["requests"] == 4
    rows = list(csv.DictReader(io.StringIO(render(rec, "csv", parse_by("day,project,model")))))
    assert {r["level"] for r in rows} == {"usage", "cost"}
    assert all(f"ledger_{c}" in rows[0] and f"openai_{c}" in rows[0] for c in COUNTERS)
    table = render(rec, "table", parse_by(["day", "project"]))
    assert "DOES NOT MATCH" in table and "[around_proxy]" in table and "0/4" in table
    with pytest.raises(ReportError):
        parse_by("team")
    with pytest.raises(ReportError):
        render(rec, "xml")


def test_a_large_organization_is_compared_in_one_pass() -> None:
    """50 projects x 28 days x 40 models (56,000 rows each side): linear, not per-pair, work."""
    days = [date(2026, 11, 1 + n % 28) for n in range(30)]
    theirs, billed, ours = [], [], []
    for p in range(50):
        for d in sorted(set(days)):
            billed.append(CostResult(d, f"p{p}", None, Decimal("0.5")))
            for m in range(40):
                counts = {"requests": 2, "input_tokens": 10 + m, "output_tokens": 3}
                theirs.append(UsageResult("completions", d, f"p{p}", f"m{m}", None, counts))
                ours.append(LedgerGroup(d, f"p{p}", f"m{m}", counts, Decimal("0.0125")))
    rec = compare(
        usage=theirs, costs=billed,
        ledger=LedgerFacts(tuple(ours), frozenset(f"p{p}" for p in range(50))),
        since=date(2026, 11, 1), until=date(2026, 11, 30), now=NOW, restate_days=0,
        tolerance_percent=Decimal(1),
    )  # fmt: skip
    assert rec.ok and len(rec.rows) == 50 * 28 * 40
