"""``openai-meter prices`` / ``prices check`` through an argparse parser built with ``register``."""

from __future__ import annotations

import argparse
import io
import sys
from datetime import date
from decimal import Decimal

import orjson
import pytest

from pricing.book import PriceBook
from proxy.commands import prices


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="openai-meter")
    prices.register(parser.add_subparsers())
    return parser.parse_args(["prices", *argv])


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


def run(book: PriceBook, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = prices.run(parse(*argv), book=book, out=out)
    return code, out.getvalue()


def test_json_for_a_snapshot_shows_its_model_with_sources(book: PriceBook) -> None:
    code, text = run(book, "gpt-4o-mini-2024-07-18", "--at", "2025-03-01", "--format", "json")
    assert code == 0
    data = orjson.loads(text)
    assert data["at"] == "2025-03-01"
    [item] = data["prices"]
    assert item["model"] == "gpt-4o-mini"
    assert item["tiers"]["standard"] == {"input": "0.15", "cached_input": "0.075", "output": "0.6"}
    assert item["tiers"]["batch"]["output"] == "0.3"
    assert item["fine_tuned"]["training_per_1m_tokens"] == "0.3"
    assert "seed 004" in item["source"]


def test_prices_change_with_the_date(book: PriceBook) -> None:
    _, before = run(book, "o3", "--at", "2025-05-01", "--format", "json")
    _, after = run(book, "o3", "--at", "2025-07-01T08:00:00Z", "--format", "json")
    assert orjson.loads(before)["prices"][0]["tiers"]["standard"]["input"] == "10"
    assert orjson.loads(after)["prices"][0]["tiers"]["standard"]["input"] == "2"


def test_per_1k_seed_data_is_listed_per_1m(book: PriceBook) -> None:
    _, text = run(book, "babbage-002", "--format", "json")
    item = orjson.loads(text)["prices"][0]
    assert item["source_unit"] == "USD per 1K tokens"
    assert item["tiers"]["standard"] == {"input": "0.4", "output": "0.4"}


def test_table_lists_every_model(book: PriceBook) -> None:
    code, text = run(book, "--at", "2026-11-01")
    assert code == 0
    rows = [line.split() for line in text.splitlines()[2:]]
    current = {m for m in book.models() if not m.startswith("ft:")}
    # every catalog model with a price in effect on that date is in the table
    assert {row[0] for row in rows} == {m for m in current if book.entry_at(m, date(2026, 11, 1))}
    assert ["gpt-5.4", ">272000", "standard", "5", "0.5", "-", "22.5", "2026-03-05"] in rows


def test_unknown_model_exits_non_zero(book: PriceBook, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(book, "gpt-99")
    assert code == 1 and text == ""
    assert "no price for 'gpt-99'" in capsys.readouterr().err


def test_bad_date_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        parse("--at", "yesterday-ish")


def test_check_reports_disagreements_with_genai_prices(book: PriceBook) -> None:
    pytest.importorskip("genai_prices")
    # a deliberately wrong negotiated price must show up as a disagreement
    wrong = PriceBook.load(overrides={"gpt-4.1": {"input": Decimal("2.10")}})
    code, text = run(wrong, "check", "--at", "2026-11-01", "--format", "json")
    data = orjson.loads(text)
    assert code == 1
    assert data["compared_prices"] > 100
    assert {
        "model": "gpt-4.1",
        "entry": "gpt-4.1@2025-04-14",
        "tier": "standard",
        "dimension": "input",
        "ours": "2.1",
        "genai_prices": "2",
        "genai_prices_model": "gpt-4.1",
    } in data["disagreements"]


def test_check_without_genai_prices_says_how_to_install(
    book: PriceBook, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # import now fails
    code, _ = run(book, "check")
    assert code == 2
    assert "pip install 'openai-meter[check]'" in capsys.readouterr().err
