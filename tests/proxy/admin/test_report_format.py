"""Report formatting (issue 12): one number of decimal places per report, exact and aligned; a
window header without microseconds; service tiers in the catalog's words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin.report_query import load_report
from proxy.admin.reporting import (
    SpendReport,
    SpendRow,
    Totals,
    Window,
    build_report,
    money,
    money_places,
    to_csv,
    to_json_obj,
    to_table,
)
from tests.support.spend_ledger import ledger_with, make_record

WINDOW = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 29, 9, 58, 41, 462698, UTC))

costs = st.decimals(min_value=0, max_value=10**6, places=10, allow_nan=False, allow_infinity=False)


def report_of(values: list[Decimal]) -> SpendReport:
    rows = (SpendRow((f"team{i}",), Totals(requests=1, cost_usd=v)) for i, v in enumerate(values))
    return build_report(WINDOW, ("team",), rows)


@given(st.lists(costs, min_size=1, max_size=30))
def test_every_cost_of_a_report_has_the_same_places_and_stays_exact(values: list[Decimal]) -> None:
    report = report_of(values)
    document = to_json_obj(report)
    shown = [row["cost_usd"] for row in document["rows"]] + [document["total"]["cost_usd"]]
    places = {len(text.partition(".")[2]) for text in shown}
    assert len(places) == 1 and 6 <= places.pop() <= 10
    assert sorted(Decimal(t) for t in shown[:-1]) == sorted(values)  # exact, nothing rounded
    assert Decimal(shown[-1]) == sum(values, Decimal(0))
    # The table's cost column: same places, right-aligned, so the decimal points line up.
    lines = to_table(report).splitlines()
    start = lines[1].index("cost_usd")
    end = start + len("cost_usd")
    body = [line for line in lines[3:] if not line.startswith("=")]
    points = {line.rindex(".", 0, end + 20) for line in body}
    assert len(points) == 1
    csv_costs = [line.split(",")[-3] for line in to_csv(report).splitlines()[1:]]
    assert {len(c.partition(".")[2]) for c in csv_costs} == {len(shown[0].partition(".")[2])}


def test_places_are_enough_for_the_smallest_cost() -> None:
    values = [Decimal("0.000519"), Decimal("0.00001632"), Decimal(0)]
    assert money_places(values) == 8
    assert [money(v, 8) for v in values] == ["0.00051900", "0.00001632", "0.00000000"]
    assert money_places([Decimal("12.5"), Decimal(0)]) == 6
    assert money_places([Decimal("0.0000000001")]) == 10
    assert money_places([Decimal("1E+3")]) == 6


def test_table_header_has_no_microseconds() -> None:
    title = to_table(report_of([Decimal("0.1")])).splitlines()[0]
    assert title == "spend 2026-11-01T00:00:00Z .. 2026-11-29T09:58:41Z (until exclusive)"
    assert to_json_obj(report_of([]))["until"] == "2026-11-29T09:58:41.462698Z"  # JSON keeps it


async def test_service_tier_reads_like_price_ref(tmp_path: Path) -> None:
    start = datetime(2026, 11, 2, tzinfo=UTC)
    records = [
        make_record(start, service_tier="default", cost="0.1"),
        make_record(start + timedelta(hours=1), service_tier="auto", cost="0.2"),
        make_record(start + timedelta(hours=2), service_tier="standard", cost="0.3"),
        make_record(start + timedelta(hours=3), service_tier="flex", cost="0.4"),
        make_record(start + timedelta(hours=4), service_tier="priority", cost="0.5"),
        make_record(start + timedelta(hours=5), service_tier="Something-New", cost="0.6"),
        make_record(start + timedelta(hours=6), service_tier=None, cost="0.7"),
    ]
    async for engine in ledger_with(tmp_path / "l.db", records):
        # Whole days (rollup path) and a partial window (raw path) agree.
        for window in (
            Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)),
            Window(start + timedelta(minutes=1) - timedelta(minutes=2), start + timedelta(days=1)),
        ):
            report = await load_report(engine, window, ("service_tier",))
            tiers = {
                row.group[0]: (row.totals.requests, row.totals.cost_usd) for row in report.rows
            }
            assert tiers == {
                "standard": (3, Decimal("0.6")),
                "flex": (1, Decimal("0.4")),
                "priority": (1, Decimal("0.5")),
                "Something-New": (1, Decimal("0.6")),
                None: (1, Decimal("0.7")),
            }
            assert orjson.dumps(to_json_obj(report))  # still the JSON contract
