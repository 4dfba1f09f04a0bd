"""Spend reports over a real (SQLite) ledger: exact totals, edges, tags, formats, the CLI."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin.admin_api import load_report
from proxy.admin.reporting import SpendReport, Window, render, resolve_window, to_json_obj
from proxy.commands import report as report_command
from tests.support.spend_ledger import (
    NOVEMBER,
    at,
    ledger_with,
    make_record,
    november_records,
)

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "reports"
WINDOW = Window(at(NOVEMBER[0]), at(NOVEMBER[1]))
IN_WINDOW = [r for r in november_records() if WINDOW.since <= r.started_at < WINDOW.until]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async for engine in ledger_with(tmp_path / "ledger.db", november_records()):
        yield engine


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from golden {path}"


async def test_totals_equal_row_sums_equal_the_ledger(ledger: AsyncEngine) -> None:
    report = await load_report(ledger, WINDOW, ("team", "model"))
    ledger_cost = sum((r.cost_usd for r in IN_WINDOW if r.cost_usd is not None), Decimal(0))
    assert ledger_cost == Decimal("1.2348380135")
    assert report.total.cost_usd == ledger_cost
    assert sum((row.totals.cost_usd for row in report.rows), Decimal(0)) == ledger_cost
    assert report.total.requests == len(IN_WINDOW) == 5
    assert report.total.unpriced_requests == 1
    assert report.total.estimated_requests == 1
    assert report.total.input_tokens == sum(r.input_tokens for r in IN_WINDOW)
    document = to_json_obj(report)
    assert document["total"]["cost_usd"] == "1.2348380135"


async def test_since_inclusive_until_exclusive(ledger: AsyncEngine) -> None:
    report = await load_report(ledger, WINDOW, ())
    assert report.total.requests == 5  # 2026-11-01T00:00 in, 2026-12-01T00:00 out
    just_after = Window(at("2026-11-01T00:00:00.000001Z"), WINDOW.until)
    later = await load_report(ledger, just_after, ())
    assert later.total.requests == 4


async def test_rows_per_team_and_model(ledger: AsyncEngine) -> None:
    report = await load_report(ledger, WINDOW, ("team", "model"))
    rows = {row.group: row.totals for row in report.rows}
    assert rows[("search", "gpt-4o-mini")].cost_usd == Decimal("0.0002701234")
    assert rows[("search", "gpt-4o-mini")].requests == 2
    assert rows[("ads", "brand-new-model")].unpriced_requests == 1
    assert rows[("ads", "brand-new-model")].cost_usd == 0
    assert rows[("unassigned", None)].requests == 1


async def test_group_by_tag_puts_untagged_rows_under_null(ledger: AsyncEngine) -> None:
    report = await load_report(ledger, WINDOW, ("tag:env",))
    rows = {row.group: row.totals.requests for row in report.rows}
    assert rows == {("dev",): 1, ("prod",): 2, (None,): 2}
    document = to_json_obj(report)
    assert document["by"] == ["tag:env"]
    assert [row["tag:env"] for row in document["rows"]] == ["dev", "prod", None]


async def test_group_by_day_and_month(ledger: AsyncEngine) -> None:
    by_day = await load_report(ledger, WINDOW, ("day",))
    assert [row.group[0] for row in by_day.rows] == [
        "2026-11-01",
        "2026-11-02",
        "2026-11-15",
        "2026-11-20",
        "2026-11-30",
    ]
    by_month = await load_report(ledger, WINDOW, ("month",))
    assert [(row.group, row.totals.requests) for row in by_month.rows] == [(("2026-11",), 5)]


@pytest.mark.parametrize("by", [("team",), ("model", "service_tier"), ("day", "endpoint"), ()])
async def test_rollup_and_raw_records_agree(ledger: AsyncEngine, by: tuple[str, ...]) -> None:
    # Whole UTC days read the daily rollup; grouping by project forces raw records. Same answer.
    from_rollup = await load_report(ledger, WINDOW, by)
    from_raw = await load_report(ledger, WINDOW, (*by, "project"))
    assert from_rollup.total == from_raw.total
    assert len(from_raw.rows) >= len(from_rollup.rows)


async def test_filters(ledger: AsyncEngine) -> None:
    report = await load_report(ledger, WINDOW, ("model",), team="ads")
    assert {row.group for row in report.rows} == {("gpt-4o-2024-08-06",), ("brand-new-model",)}
    only = await load_report(ledger, WINDOW, (), model="gpt-4o-mini")
    assert only.total.requests == 2


async def test_relative_span_over_the_ledger(tmp_path: Path) -> None:
    now = at("2026-11-17T12:00:00Z")
    records = [
        make_record("2026-11-16T12:00:00Z", team="a", cost="1"),  # exactly 24h ago: in
        make_record("2026-11-16T11:59:59Z", team="a", cost="2"),  # out
        make_record("2026-11-17T11:59:59Z", team="a", cost="4"),  # in
    ]
    async for engine in ledger_with(tmp_path / "l.db", records):
        report = await load_report(engine, resolve_window("24h", None, now), ())
        assert report.total.cost_usd == Decimal(5)


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
async def test_formats_match_golden(ledger: AsyncEngine, fmt: str) -> None:
    report = await load_report(ledger, WINDOW, ("team", "model"))
    check_golden(f"team_model.{fmt}", render(report, fmt))


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
async def test_ungrouped_and_tag_formats_match_golden(ledger: AsyncEngine, fmt: str) -> None:
    check_golden(f"total.{fmt}", render(await load_report(ledger, WINDOW, ()), fmt))
    check_golden(f"tag_env.{fmt}", render(await load_report(ledger, WINDOW, ("tag:env",)), fmt))


def test_empty_report_renders(tmp_path: Path) -> None:
    report = SpendReport(WINDOW, ("team",), ())
    assert "TOTAL" in render(report, "table")
    assert render(report, "csv").splitlines()[-1].startswith("TOTAL,0,")
    assert orjson.loads(render(report, "json"))["total"]["cost_usd"] == "0.000000"


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_command.register(parser.add_subparsers())
    return parser.parse_args(["report", *argv])


async def test_cli_prints_the_report(
    ledger: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    args = _cli(
        "--since",
        "2026-11-01",
        "--until",
        "2026-12-01",
        "--by",
        "team,model",
        "--format",
        "json",
        "--database-url",
        url,
    )
    # The command runs its own event loop: run it in a worker thread.
    import asyncio

    code = await asyncio.to_thread(args.func, args)
    assert code == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["total"]["cost_usd"] == "1.2348380135"
    assert out["since"] == "2026-11-01T00:00:00Z"


def test_cli_rejects_bad_by(capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli("--by", "colour", "--database-url", "sqlite:///unused.db")
    assert args.func(args) == 2
    assert "cannot group by 'colour'" in capsys.readouterr().err
