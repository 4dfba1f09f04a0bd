"""What-if re-pricing and savings on a ledger with hand-computed figures (both backends)."""

from __future__ import annotations

import argparse
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.book import PriceBook
from pricing.usage import TOKEN_FIELDS, Usage
from pricing.whatif import LeverError, parse_levers
from proxy.admin.admin_api import load_report
from proxy.admin.reporting import Window
from proxy.admin.whatif import (
    compute_extras,
    extend_json,
    extended_csv,
    extended_table,
    load_extras,
)
from proxy.commands import report as report_command
from storage.ledger import write_batch
from storage.record import UsageRecord
from storage.whatif import call_groups
from tests.support.spend_ledger import at, ledger_with, make_record, migrated_engine
from tests.support.whatif_ledger import (
    EXPECTED_SAVINGS,
    EXPECTED_WHAT_IF,
    WINDOW,
    whatif_records,
)

BOOK = PriceBook.load()
LEVERS = ("model=gpt-4.1-nano", "tier=batch", "tier=flex", "tier=priority")


def usage_of(record: UsageRecord) -> Usage:
    return Usage(**{n: getattr(record, n) for n in TOKEN_FIELDS}, units=record.units)


def test_the_hand_written_costs_are_the_engines() -> None:
    for record in whatif_records():
        if record.cost_usd is None or record.cost_usd == 100:
            continue
        cost = BOOK.price(usage_of(record), record.model, record.service_tier, record.started_at)
        assert cost.total == record.cost_usd, record


async def extended(engine: AsyncEngine, by: tuple[str, ...], *, savings: bool) -> dict[str, Any]:
    await write_batch(engine, whatif_records())
    window = Window(*WINDOW)
    report = await load_report(engine, window, by)
    levers = parse_levers(list(LEVERS), BOOK)
    extras = await load_extras(engine, BOOK, window, by, levers, with_savings=savings)
    return extend_json(report, extras)


async def test_what_if_per_team_is_exact(engine: AsyncEngine) -> None:
    document = await extended(engine, ("team",), savings=False)
    assert document["what_if"] == list(LEVERS)
    rows = {row["team"]: row for row in document["rows"]}
    assert Decimal(rows["search"]["cost_usd"]) == Decimal("0.49121")
    assert Decimal(rows["ads"]["cost_usd"]) == Decimal("0.3347")
    for lever, per_team in EXPECTED_WHAT_IF.items():
        for team, (cost, actual, difference, repriced, reasons) in per_team.items():
            got = rows[team]["what_if"][lever]
            assert Decimal(got["cost_usd"]) == Decimal(cost), (lever, team)
            assert Decimal(got["actual_usd"]) == Decimal(actual), (lever, team)
            assert Decimal(got["difference_usd"]) == Decimal(difference), (lever, team)
            assert got["repriced_requests"] == repriced, (lever, team)
            assert got["not_repriced"] == reasons, (lever, team)
            # every call is either re-priced or counted with a reason: none dropped
            assert repriced + got["not_repriced_requests"] == rows[team]["requests"]
        total = document["total"]["what_if"][lever]
        assert Decimal(total["cost_usd"]) == sum(Decimal(v[0]) for v in per_team.values())
        assert total["repriced_requests"] + total["not_repriced_requests"] == 11


async def test_savings_per_team_and_model_are_exact(engine: AsyncEngine) -> None:
    document = await extended(engine, ("team", "model"), savings=True)
    rows = {(row["team"], row["model"]): row["savings"] for row in document["rows"]}
    for key, (cached, batch, flex, share) in EXPECTED_SAVINGS.items():
        got = rows[key]
        assert Decimal(got["cached_input_usd"]) == Decimal(cached), key
        assert Decimal(got["batch_usd"]) == Decimal(batch), key
        assert Decimal(got["flex_usd"]) == Decimal(flex), key
        assert got["cached_input_share"] == share, key
    total = document["total"]["savings"]
    assert Decimal(total["cached_input_usd"]) == Decimal("0.0165")
    assert Decimal(total["batch_usd"]) == Decimal("0.30")
    assert Decimal(total["flex_usd"]) == Decimal("0.0075")
    assert Decimal(total["total_usd"]) == Decimal("0.324")
    # no savings where nothing was cached or discounted; unpriced calls save nothing
    assert Decimal(rows[("ads", "brand-new-model")]["total_usd"]) == 0


async def test_summed_and_per_call_paths_agree(tmp_path: Path) -> None:
    """Linear calls are summed in SQL (a configured discount forces one by one): same figures."""
    async for engine in ledger_with(tmp_path / "l.db", whatif_records()):
        window = Window(*WINDOW)
        levers = parse_levers(list(LEVERS), BOOK)
        summed_groups = await call_groups(
            engine,
            since=window.since,
            until=window.until,
            by=("team",),
            long_floor=BOOK.long_context_floor(),
        )
        single_groups = await call_groups(
            engine, since=window.since, until=window.until, by=("team",), per_call=True
        )
        # R3 + R11 (o3, same day) are one summed group; R1 (long) and R9 (units) are single
        assert any(g.summed and g.count == 2 and g.cost_usd is not None for g in summed_groups)
        # R1, R4, R5 (above the long-context floor), R9 (units)
        assert sum(1 for g in summed_groups if not g.summed) == 4
        assert all(not g.summed or g.cost_usd is None for g in single_groups)
        summed = compute_extras(BOOK, summed_groups, levers, with_savings=True)
        single = compute_extras(BOOK, single_groups, levers, with_savings=True)
        for team in ("search", "ads"):
            for lever in LEVERS:
                a = summed.what_if[(team,)][lever]
                b = single.what_if[(team,)][lever]
                assert (a.cost_usd, a.actual_usd, a.not_repriced) == (
                    b.cost_usd,
                    b.actual_usd,
                    b.not_repriced,
                )
            assert summed.savings[(team,)].amounts == single.savings[(team,)].amounts


async def test_formats_carry_the_same_figures(engine: AsyncEngine) -> None:
    await write_batch(engine, whatif_records())
    window = Window(*WINDOW)
    report = await load_report(engine, window, ("team",))
    levers = parse_levers(["tier=batch"], BOOK)
    extras = await load_extras(engine, BOOK, window, ("team",), levers, with_savings=True)
    text = extended_csv(report, extras)
    lines = text.splitlines()
    assert lines[0].split(",")[-9:-5] == [
        "what_if[tier=batch].cost_usd",
        "what_if[tier=batch].actual_usd",
        "what_if[tier=batch].difference_usd",
        "what_if[tier=batch].not_repriced_requests",
    ]
    search = next(line for line in lines if line.startswith("search,")).split(",")
    cost, actual, difference, missing = search[-9:-5]
    assert (Decimal(cost), Decimal(actual), Decimal(difference), missing) == (
        Decimal("0.278105"),
        Decimal("0.49121"),
        Decimal("-0.213105"),
        "0",
    )
    table = extended_table(report, extras)
    assert "what if tier=batch" in table
    assert (
        "not re-priced: 1 call(s): unpriced in the ledger (unknown model 'brand-new-model')"
        in table
    )
    assert "savings already made" in table


@pytest.mark.parametrize(
    "text",
    [
        "model",
        "model=",
        "tier=cheap",
        "colour=red",
        "model=no-such-model",
        "model=ft:gpt-4o-mini:x",
        "x" * 10_000,
        "tier=batch,tier=batch",
        "model=\udcff",
    ],
)
def test_bad_levers_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(LeverError):
        parse_levers([text], BOOK)


def test_lever_names_are_canonical() -> None:
    levers = parse_levers(["model=gpt-4.1-nano-2025-04-14", "TIER=Batch"], BOOK)
    assert [lever.name for lever in levers] == ["model=gpt-4.1-nano", "tier=batch"]


def test_cli_what_if_and_savings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def seed() -> None:
        engine = await migrated_engine(tmp_path / "l.db")
        await write_batch(engine, whatif_records())
        await engine.dispose()

    asyncio.run(seed())
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    report_command.register(sub)
    args = parser.parse_args(
        [
            "report",
            "--database-url",
            f"sqlite:///{tmp_path}/l.db",
            "--since",
            "2025-06-09",
            "--until",
            "2025-06-11",
            "--by",
            "team",
            "--what-if",
            "model=gpt-4.1-nano",
            "--what-if",
            "tier=flex",
            "--savings",
            "--format",
            "json",
        ]
    )
    assert args.func(args) == 0
    document = orjson.loads(capsys.readouterr().out)
    rows = {row["team"]: row for row in document["rows"]}
    assert Decimal(rows["ads"]["what_if"]["tier=flex"]["cost_usd"]) == Decimal("0.0126")
    nano = rows["search"]["what_if"]["model=gpt-4.1-nano"]
    assert Decimal(nano["difference_usd"]) == Decimal("-0.247075")
    assert Decimal(document["total"]["savings"]["total_usd"]) == Decimal("0.324")
    bad = parser.parse_args(
        ["report", "--database-url", f"sqlite:///{tmp_path}/l.db", "--what-if", "tier=cheap"]
    )
    assert bad.func(bad) == 2
    assert "tier 'cheap'" in capsys.readouterr().err
    for empty in ("", " ", "tier=batch,", ",model=gpt-4.1-nano"):  # as GET /meter/spend: refused
        args = parser.parse_args(
            ["report", "--database-url", f"sqlite:///{tmp_path}/l.db", "--what-if", empty]
        )
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--what-if must not be empty" in err, err


async def test_price_spans_give_the_same_figures_as_days(tmp_path: Path) -> None:
    """Summing per price span (between catalog change days) equals summing per UTC day."""
    from datetime import UTC, datetime, time

    records = whatif_records()
    # more linear calls on both sides of the o3 cut, on several days
    for day in ("2025-06-09", "2025-06-10", "2025-06-11", "2025-06-12"):
        for hour in (1, 7, 23):
            records.append(
                make_record(
                    f"{day}T{hour:02d}:00:00Z",
                    team="search",
                    model="o3",
                    cost=str(
                        BOOK.price(
                            Usage(input_tokens=hour * 100, output_tokens=hour),
                            "o3",
                            None,
                            at(f"{day}T{hour:02d}:00:00Z"),
                        ).total
                    ),
                    input_tokens=hour * 100,
                    output_tokens=hour,
                    endpoint="responses",
                )
            )
    assert date(2025, 6, 10) in BOOK.change_days()
    async for engine in ledger_with(tmp_path / "l.db", records):
        window = Window(WINDOW[0], at("2025-06-13T00:00:00Z"))
        levers = parse_levers(list(LEVERS), BOOK)
        common = {"since": window.since, "until": window.until, "by": ("team",)}
        per_day = await call_groups(engine, long_floor=BOOK.long_context_floor(), **common)
        spans = [datetime.combine(d, time(0), tzinfo=UTC) for d in BOOK.change_days()]
        per_span = await call_groups(
            engine, long_floor=BOOK.long_context_floor(), boundaries=spans, **common
        )
        assert len(per_span) < len(per_day)
        a = compute_extras(BOOK, per_day, levers, with_savings=True)
        b = compute_extras(BOOK, per_span, levers, with_savings=True)
        for team in ("search", "ads"):
            for lever in LEVERS:
                x, y = a.what_if[(team,)][lever], b.what_if[(team,)][lever]
                assert (x.cost_usd, x.actual_usd, x.not_repriced) == (
                    y.cost_usd,
                    y.actual_usd,
                    y.not_repriced,
                )
            assert a.savings[(team,)].amounts == b.savings[(team,)].amounts
