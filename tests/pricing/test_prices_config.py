"""``openai-meter prices`` and ``GET /meter/prices`` show this deployment's prices: overrides and
discounts from the configuration (file, ``OPENAI_METER_CONFIG``, ``OPENAI_METER_PRICING__*``),
marked with the ``price_ref`` the ledger gets for calls at those prices."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from pricing.usage import Usage
from proxy.commands import prices
from tests.support.fake_upstream import FakeUpstream
from tests.support.product import Product, share_encodings

AT = "2026-11-01"
CONFIG = """
pricing:
  overrides:
    gpt-4o-mini-2024-07-18: {input: "0.1", output: "0.5"}
    in-house-model: {input: "1", output: "2"}
  discount_percent: 5
  model_discount_percent:
    o3: "12.5"
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="openai-meter")
    prices.register(parser.add_subparsers())
    return parser.parse_args(["prices", *argv])


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = prices.run(parse(*argv), out=out, environ=environ or {})
    return code, out.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "meter.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return str(path)


def items_by_model(text: str) -> dict[str, dict[str, Any]]:
    return {item["model"]: item for item in orjson.loads(text)["prices"]}


def test_overrides_and_discounts_from_the_config_file_are_listed_and_marked(config: str) -> None:
    code, text = run("--config", config, "--at", AT, "--format", "json")
    assert code == 0
    items = items_by_model(text)
    mini = items["gpt-4o-mini"]
    assert mini["tiers"]["standard"]["input"] == "0.1"  # negotiated, not the catalog's 0.15
    assert mini["tiers"]["standard"]["output"] == "0.5"
    assert mini["tiers"]["batch"]["input"] == "0.05"  # batch follows the negotiated price
    assert mini["override"] is True and mini["discount_percent"] == "5"
    assert mini["price_refs"]["standard"].endswith("/standard+override-5%")
    o3 = items["o3"]
    assert "override" not in o3 and o3["discount_percent"] == "12.5"
    assert o3["price_refs"]["standard"].endswith("/standard-12.5%")
    assert items["in-house-model"]["tiers"]["standard"] == {"input": "1", "output": "2"}
    assert items["in-house-model"]["source"] == "configuration: pricing.overrides"


def test_listed_price_refs_are_what_the_engine_writes_to_the_ledger(config: str) -> None:
    book = prices.configured_book(config, {})
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    _, text = run("--config", config, "--at", AT, "--format", "json")
    items = items_by_model(text)
    usage = Usage(input_tokens=1000, output_tokens=10)
    for model, tier in [("gpt-4o-mini", "standard"), ("gpt-4o-mini", "flex"), ("o3", "batch")]:
        cost = book.price(usage, model, tier, at)
        assert cost.price_ref == items[model]["price_refs"][tier], (model, tier)
    # an ft: call on an overridden base is priced (and listed) with the same suffixes
    fine = book.price(usage, "ft:gpt-4o-mini-2024-07-18:acme::x", None, at)
    assert fine.price_ref == items["gpt-4o-mini"]["fine_tuned"]["price_refs"]["standard"]


def test_config_comes_from_openai_meter_config_and_pricing_env_wins(config: str) -> None:
    environ = {
        "OPENAI_METER_CONFIG": config,
        "OPENAI_METER_PRICING__DISCOUNT_PERCENT": "7",
        "OPENAI_METER_PRICING__OVERRIDES": '{"o3": {"input": "1.5"}}',
    }
    _, text = run("--at", AT, "--format", "json", environ=environ)
    items = items_by_model(text)
    assert items["gpt-4o-mini"]["discount_percent"] == "7"
    assert items["o3"]["tiers"]["standard"]["input"] == "1.5"
    assert items["o3"]["override"] is True and items["o3"]["discount_percent"] == "12.5"
    # the environment's overrides mapping replaces the file's for the keys it names
    assert items["gpt-4o-mini"]["tiers"]["standard"]["input"] == "0.1"


def test_table_has_a_config_column_only_when_something_is_configured(config: str) -> None:
    _, plain = run("gpt-4o-mini", "--at", AT)
    assert "CONFIG" not in plain and "+override" not in plain
    code, text = run("gpt-4o-mini", "--at", AT, "--config", config)
    assert code == 0
    lines = text.splitlines()
    assert lines[1].split()[-1] == "CONFIG"
    standard = next(line.split() for line in lines[2:] if line.split()[1] == "standard")
    assert standard[:3] == ["gpt-4o-mini", "standard", "0.1"]
    assert standard[-1] == "+override-5%"
    assert any("+override = pricing.overrides" in line for line in lines)


def test_bad_pricing_config_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pricing:\n  overrides:\n    gpt-4o: {inptu: '1'}\n", encoding="utf-8")
    code, text = run("--config", str(path))
    assert code == 2 and text == ""
    err = capsys.readouterr().err
    assert "pricing.overrides.gpt-4o" in err and "inptu" in err
    code, _ = run(environ={"OPENAI_METER_PRICING__DISCOUNT_PERCENT": "150"})
    assert code == 2
    assert "discount" in capsys.readouterr().err


def test_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("--config", "/nonexistent/meter.yaml")
    assert code == 2
    assert "cannot read config file /nonexistent/meter.yaml" in capsys.readouterr().err


async def test_running_proxy_lists_its_configured_prices(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share_encodings(monkeypatch)
    pricing = {
        "overrides": {"gpt-4o-mini": {"input": "0.1"}},
        "model_discount_percent": {"o3": "10"},
    }
    async with (
        Product(fake_upstream.url, tmp_path, pricing=pricing) as product,
        aiohttp.ClientSession() as session,
        session.get(f"{product.url}/meter/prices", params={"at": AT}) as response,
    ):
        assert response.status == 200
        data = await response.json()
    items = {item["model"]: item for item in data["prices"]}
    assert items["gpt-4o-mini"]["tiers"]["standard"]["input"] == "0.1"
    assert items["gpt-4o-mini"]["price_refs"]["standard"].endswith("+override")
    assert items["o3"]["price_refs"]["standard"].endswith("-10%")
    assert "override" not in items["gpt-4.1"] and "discount_percent" not in items["gpt-4.1"]
