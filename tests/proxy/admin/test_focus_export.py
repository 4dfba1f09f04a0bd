"""``openai-meter export focus``: a golden file, the FOCUS 1.2 column rules, exact BilledCost sums,
and Parquet.

The rules below are transcribed from the FOCUS 1.2 specification (https://focus.finops.org/
focus-specification/v1-2/; FOCUS_Spec ``specification/columns/*.md``: each column's "MUST be
present", "MUST NOT be null", data type and allowed values), and from its attributes (Date/Time
Format: UTC ISO 8601; Currency Format: ISO 4217; Key-Value Format: a serialized JSON object;
Column Naming: custom columns start with ``x_``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.book import PriceBook
from pricing.usage import TOKEN_FIELDS, Usage
from proxy.admin.focus.columns import COLUMN_NAMES
from proxy.admin.focus.rows import Group, GroupKey, aggregate, allocate, focus_rows
from proxy.cli import main
from storage.engine import create_engine
from storage.focus import ledger_cost_sum
from storage.ledger import write_batch
from storage.migrate import upgrade
from storage.record import UsageRecord

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "focus" / "ledger_2026-11-03.csv"
DAY = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)

# ---------------------------------------------------------------- FOCUS 1.2, transcribed

FOCUS_12_COLUMNS = frozenset(
    [
        "AvailabilityZone",
        "BilledCost",
        "BillingAccountId",
        "BillingAccountName",
        "BillingAccountType",
        "BillingCurrency",
        "BillingPeriodEnd",
        "BillingPeriodStart",
        "CapacityReservationId",
        "CapacityReservationStatus",
        "ChargeCategory",
        "ChargeClass",
        "ChargeDescription",
        "ChargeFrequency",
        "ChargePeriodEnd",
        "ChargePeriodStart",
        "CommitmentDiscountCategory",
        "CommitmentDiscountId",
        "CommitmentDiscountName",
        "CommitmentDiscountQuantity",
        "CommitmentDiscountStatus",
        "CommitmentDiscountType",
        "CommitmentDiscountUnit",
        "ConsumedQuantity",
        "ConsumedUnit",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "InvoiceId",
        "InvoiceIssuerName",
        "ListCost",
        "ListUnitPrice",
        "PricingCategory",
        "PricingCurrency",
        "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyEffectiveCost",
        "PricingCurrencyListUnitPrice",
        "PricingQuantity",
        "PricingUnit",
        "ProviderName",
        "PublisherName",
        "RegionId",
        "RegionName",
        "ResourceId",
        "ResourceName",
        "ResourceType",
        "ServiceCategory",
        "ServiceName",
        "ServiceSubcategory",
        "SkuId",
        "SkuMeter",
        "SkuPriceDetails",
        "SkuPriceId",
        "SubAccountId",
        "SubAccountName",
        "SubAccountType",
        "Tags",
    ]
)
DECIMAL = {
    "BilledCost", "CommitmentDiscountQuantity", "ConsumedQuantity", "ContractedCost",
    "ContractedUnitPrice", "EffectiveCost", "ListCost", "ListUnitPrice", "PricingQuantity",
    "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
}  # fmt: skip
DATETIME = {"BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"}
KEY_VALUE = {"Tags", "SkuPriceDetails"}
# Mandatory and "MUST NOT be null" on every row.
NOT_NULL = {
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
}  # fmt: skip
# "MUST NOT be null when ChargeCategory is Usage and ChargeClass is not Correction".
NOT_NULL_FOR_USAGE = {
    "ConsumedQuantity", "ConsumedUnit", "PricingCategory", "PricingQuantity", "PricingUnit", "SkuId",
}  # fmt: skip
# Same condition, for providers that publish unit prices: ours, except on rows of calls the ledger
# has unpriced (x_Unpriced), where the price is unknown (our documented deviation).
NOT_NULL_WHEN_PRICED = {"ListUnitPrice", "ContractedUnitPrice", "SkuPriceId"}
ALLOWED = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeClass": {"", "Correction"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {
        "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
        "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
        "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
        "Storage", "Web", "Other",
    },
}  # fmt: skip
# Columns this export leaves null, each with its reason in proxy/admin/focus/columns.py.
ALWAYS_NULL = {
    "AvailabilityZone", "BillingAccountType", "CapacityReservationId", "CapacityReservationStatus",
    "ChargeClass", "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "CommitmentDiscountUnit", "InvoiceId", "PricingCurrency", "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "RegionId", "RegionName",
    "ResourceId", "ResourceName", "ResourceType", "SkuPriceDetails", "SubAccountType",
}  # fmt: skip
ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
PLAIN_DECIMAL = re.compile(r"-?\d+(\.\d+)?")


def check_focus_rows(rows: list[dict[str, str]], header: list[str]) -> None:
    """Every FOCUS 1.2 rule above, on CSV rows (null = empty field)."""
    assert set(header) >= FOCUS_12_COLUMNS, FOCUS_12_COLUMNS - set(header)
    assert all(name in FOCUS_12_COLUMNS or name.startswith("x_") for name in header)
    assert len(header) == len(set(header))
    for row in rows:
        for name in DECIMAL:
            assert row[name] == "" or PLAIN_DECIMAL.fullmatch(row[name]), (name, row[name])
        for name in DATETIME:
            assert ISO_UTC.fullmatch(row[name]), (name, row[name])
        for name in KEY_VALUE:
            if row[name]:
                value = json.loads(row[name])
                assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        for name in NOT_NULL:
            assert row[name] != "", name
        if row["ChargeCategory"] == "Usage" and row["ChargeClass"] != "Correction":
            for name in NOT_NULL_FOR_USAGE:
                assert row[name] != "", name
            assert Decimal(row["ConsumedQuantity"]) > 0
            if row["x_Unpriced"] == "false":
                for name in NOT_NULL_WHEN_PRICED:
                    assert row[name] != "", name
        for name, allowed in ALLOWED.items():
            assert row[name] in allowed, (name, row[name])
        for name in ALWAYS_NULL:
            assert row[name] == "", name
        assert re.fullmatch(r"[A-Z]{3}", row["BillingCurrency"])
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"] < row["ChargePeriodEnd"]
        assert row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        assert row["EffectiveCost"] == row["BilledCost"]  # no commitments to amortize
        if row["SubAccountId"]:
            assert row["SubAccountName"]
        for price, cost in (
            ("ListUnitPrice", "ListCost"),
            ("ContractedUnitPrice", "ContractedCost"),
        ):
            if row[price]:
                product = Decimal(row[price]) * Decimal(row["PricingQuantity"])
                assert abs(product - Decimal(row[cost])) <= Decimal("1e-10"), (price, row)


# ---------------------------------------------------------------- a small ledger


def _record(n: int, book: PriceBook, **values: Any) -> UsageRecord:
    started = DAY + timedelta(hours=n)
    usage = Usage(
        **{name: values.pop(name) for name in TOKEN_FIELDS if name in values},
        units=values.pop("units", {}),
    )
    model = values.setdefault("model", "gpt-4o-mini-2024-07-18")
    cost = book.price(usage, model, values.get("service_tier"), started)
    return UsageRecord(
        id=f"focus-{n:04d}",
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        method="POST",
        path="/v1/chat/completions",
        endpoint=values.pop("endpoint", "chat.completions"),
        status_code=200,
        outcome="ok",
        usage_source=values.pop("usage_source", "reported"),
        cost_usd=cost.total,
        price_ref=cost.price_ref,
        units=usage.units,
        **{name: getattr(usage, name) for name in TOKEN_FIELDS},
        **values,
    )


def ledger_records() -> list[UsageRecord]:
    book = PriceBook.load()
    return [
        _record(0, book, input_tokens=1237, cached_input_tokens=512, output_tokens=311,
                project="proj_main", team="search", tags={"env": "prod"}, organization="org-acme"),
        _record(1, book, input_tokens=733, output_tokens=97, project="proj_main", team="search",
                tags={"env": "prod"}, organization="org-acme"),
        _record(2, book, input_tokens=50, output_tokens=7, project="proj_main", team="search",
                service_tier="priority", organization="org-acme"),
        _record(3, book, model="gpt-mystery-1", input_tokens=40, output_tokens=9,
                project="proj_lab", team="research", organization="org-acme"),
        _record(4, book, model="text-embedding-3-small", endpoint="embeddings", input_tokens=8191,
                project="proj_lab", team="research", organization="org-acme"),
        _record(5, book, model="tts-1", endpoint="audio.speech", units={"characters": Decimal(1234)},
                project=None, team="unassigned"),
        _record(6, book, model="whisper-1", endpoint="audio.transcriptions",
                units={"audio_seconds": Decimal("61.5")}, project="proj_lab", team="research",
                organization="org-acme"),
        _record(7, book, input_tokens=99, output_tokens=1, usage_source="estimated",
                project="proj_main", team="search", organization="org-acme"),
        _record(30, book, input_tokens=4000, output_tokens=1000, project="proj_main",
                team="search", tags={"env": "prod"}, organization="org-acme"),  # the next day
    ]  # fmt: skip


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"

    async def fill() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            await write_batch(engine, ledger_records())
        finally:
            await engine.dispose()

    asyncio.run(fill())
    return url


def _export(url: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", "focus", "--database-url", url, *args])
    return code, out.getvalue(), err.getvalue()


def _ledger_sum(url: str) -> Decimal:
    async def total() -> Decimal:
        engine = create_engine(url)
        try:
            return await ledger_cost_sum(engine, DAY - timedelta(days=1), DAY + timedelta(days=2))
        finally:
            await engine.dispose()

    return asyncio.run(total())


# ---------------------------------------------------------------- tests


def test_golden_file(ledger_url: str, tmp_path: Path) -> None:
    out = tmp_path / "focus.csv"
    code, _, err = _export(
        ledger_url, "--since", "2026-11-03", "--until", "2026-11-05", "--out", str(out)
    )
    assert code == 0, err
    text = out.read_text()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_every_row_follows_the_focus_rules_and_billed_cost_sums_to_the_ledger(
    ledger_url: str,
) -> None:
    code, text, err = _export(ledger_url, "--since", "2026-11-03", "--until", "2026-11-05")
    assert code == 0, err
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    check_focus_rows(rows, list(reader.fieldnames or []))
    billed = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    assert billed == _ledger_sum(ledger_url)
    assert sum(int(r["x_Requests"]) for r in rows) == len(ledger_records())
    by_sku = {r["SkuId"]: r for r in rows}
    assert by_sku["gpt-4o-mini:cached_input:standard"]["ConsumedQuantity"] == "512"
    assert by_sku["gpt-4o-mini:output:priority"]["ConsumedUnit"] == "Tokens"
    assert by_sku["gpt-4o-mini:input:standard"]["PricingUnit"] == "1000000 Tokens"
    assert by_sku["whisper-1:audio_seconds:standard"]["PricingUnit"] == "Minutes"
    unpriced = [r for r in rows if r["x_Unpriced"] == "true"]
    assert {r["x_Model"] for r in unpriced} == {"gpt-mystery-1"}
    assert all(r["BilledCost"] == "0" and r["ListUnitPrice"] == "" for r in unpriced)
    tags = json.loads(by_sku["gpt-4o-mini:cached_input:standard"]["Tags"])
    assert tags == {"env": "prod", "openai-meter/team": "search"}
    tts = by_sku["tts-1:characters:standard"]
    assert tts["SubAccountId"] == "" and tts["BillingAccountId"] == "unknown"


def test_billing_account_flag_names_rows_without_an_organization(ledger_url: str) -> None:
    code, text, _ = _export(ledger_url, "--since", "2026-11-03", "--billing-account", "org-mine")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["BillingAccountId"] for r in rows} == {"org-acme", "org-mine"}


def test_parquet_keeps_the_columns_and_exact_decimals(ledger_url: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "focus.parquet"
    code, _, err = _export(
        ledger_url, "--since", "2026-11-03", "--until", "2026-11-05", "--out", str(out)
    )
    assert code == 0, err
    table = pq.read_table(str(out))
    assert tuple(table.column_names) == COLUMN_NAMES
    assert str(table.schema.field("BilledCost").type) == "decimal128(38, 10)"
    assert str(table.schema.field("ChargePeriodStart").type) == "timestamp[us, tz=UTC]"
    billed = sum(table.column("BilledCost").to_pylist(), Decimal(0))
    assert billed == _ledger_sum(ledger_url)


def test_an_unknown_output_suffix_is_refused(ledger_url: str, tmp_path: Path) -> None:
    code, _, err = _export(ledger_url, "--out", str(tmp_path / "focus.xlsx"))
    assert code == 2 and ".csv or .parquet" in err


def test_an_empty_window_is_a_header_only_file(ledger_url: str) -> None:
    code, text, _ = _export(ledger_url, "--since", "2020-01-01", "--until", "2020-01-02")
    assert code == 0
    assert text.splitlines() == [",".join(COLUMN_NAMES)]


# ---------------------------------------------------------------- properties

money = st.decimals(min_value=0, max_value=1000, places=10, allow_nan=False, allow_infinity=False)


@given(total=money, weights=st.lists(money, min_size=1, max_size=12))
def test_allocation_always_sums_to_the_total(total: Decimal, weights: list[Decimal]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts, Decimal(0)) == total


@given(
    calls=st.lists(
        st.tuples(
            st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**6), money,
            st.sampled_from(["gpt-4o-mini", "gpt-4o", "o3", "gpt-mystery"]),
            st.sampled_from([None, "priority", "flex"]), st.booleans(),
        ),
        max_size=20,
    )
)  # fmt: skip
def test_billed_cost_sums_to_the_ledger_for_any_calls(
    calls: list[tuple[int, int, int, Decimal, str, str | None, bool]],
) -> None:
    book = PriceBook.load()
    rows = []
    for n, (inp, cached, out, cost, model, tier, priced) in enumerate(calls):
        rows.append(
            {
                "started_at": DAY + timedelta(minutes=n),
                "model": model,
                "service_tier": tier,
                "team": "t",
                "tags": {},
                "input_tokens": inp + cached,
                "cached_input_tokens": cached,
                "output_tokens": out,
                "units": {},
                "cost_usd": cost if priced else None,
                "price_ref": None,
                "usage_source": "reported",
            }
        )
    focus = focus_rows(aggregate(rows), book, book)
    expected = sum((r["cost_usd"] for r in rows if r["cost_usd"] is not None), Decimal(0))
    assert sum((r["BilledCost"] for r in focus), Decimal(0)) == expected
    assert all(r["BilledCost"] >= 0 for r in focus if r["x_Unpriced"] is False) or expected >= 0


def test_group_key_types_are_hashable() -> None:
    key = GroupKey(DAY.date(), None, None, "m", "standard", "t", (), None, True)
    assert {key: Group()}[key].requests == 0


def test_contracted_cost_follows_the_configured_price_and_list_cost_the_catalog(
    ledger_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "meter.yaml"
    config.write_text('pricing:\n  overrides:\n    gpt-4o-mini: {input: "0.12", output: "0.50"}\n')
    code, text, err = _export(
        ledger_url, "--since", "2026-11-04", "--until", "2026-11-05", "--config", str(config)
    )
    assert code == 0, err
    rows = {r["SkuId"]: r for r in csv.DictReader(io.StringIO(text))}
    output = rows["gpt-4o-mini:output:standard"]
    assert output["ListUnitPrice"] == "0.6" and output["ContractedUnitPrice"] == "0.5"
    assert output["ListCost"] == "0.0006000000" and output["ContractedCost"] == "0.0005000000"
    # BilledCost stays what the ledger recorded (priced at the time, before this override)
    assert sum(Decimal(r["BilledCost"]) for r in rows.values()) == Decimal("0.0012")
