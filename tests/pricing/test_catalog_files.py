"""Catalog files are validated strictly; a bad file is refused with its file and entry named."""

from __future__ import annotations

import textwrap

import pytest

from pricing.load import CatalogError, parse_catalog, shipped_catalog_texts

GOOD_ENTRY = """
  - model: my-model
    effective_from: 2025-01-01
    source: "test"
    checked: 2026-01-01
    standard: {input: "1.00", output: "2.00"}
"""


def parse(body: str, name: str = "custom.yaml") -> None:
    parse_catalog([(name, textwrap.dedent(body))])


def test_the_shipped_catalog_loads_and_every_entry_has_provenance() -> None:
    files = parse_catalog(shipped_catalog_texts())
    entries = [e for f in files for e in f.entries]
    assert len(entries) > 70
    assert all(e.source and e.checked for e in entries)
    assert {t.unit for f in files for t in f.tools} == {
        "web_search_calls",
        "file_search_calls",
        "containers",
        "file_search_storage_gb_days",
    }


def test_a_good_entry_parses() -> None:
    parse("entries:" + GOOD_ENTRY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('input: "1.00"', "input: 1.00"),  # a YAML float: inexact
        ('input: "1.00"', 'input: "-1"'),
        ('input: "1.00"', 'input: "one"'),
        ('input: "1.00"', 'inptu: "1.00"'),
        ('input: "1.00"', 'input: "0.000001"'),  # > 4 decimals per 1M
    ],
)
def test_bad_rates_are_refused_naming_file_and_entry(change: str, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse("entries:" + GOOD_ENTRY.replace(change, message))
    text = str(info.value)
    assert text.startswith("custom.yaml: entries[0]")
    assert "my-model" in text


def test_unknown_entry_field_is_refused() -> None:
    with pytest.raises(CatalogError, match=r"custom.yaml: entries\[0\] \(my-model\).colour"):
        parse("entries:" + GOOD_ENTRY + "    colour: blue\n")


def test_overlapping_periods_of_one_model_are_refused() -> None:
    with pytest.raises(CatalogError, match="overlap"):
        parse("entries:" + GOOD_ENTRY + GOOD_ENTRY.replace("2025-01-01", "2025-06-01"))


def test_consecutive_periods_are_fine() -> None:
    first = GOOD_ENTRY.replace("    source:", "    effective_until: 2025-06-01\n    source:")
    parse("entries:" + first + GOOD_ENTRY.replace("2025-01-01", "2025-06-01"))


def test_a_name_cannot_belong_to_two_models() -> None:
    other = GOOD_ENTRY.replace("my-model", "other-model").replace(
        "    effective_from", "    aliases: [my-model]\n    effective_from"
    )
    with pytest.raises(CatalogError, match="'my-model' is claimed by both"):
        parse("entries:" + GOOD_ENTRY + other)


def test_an_entry_without_any_price_is_refused() -> None:
    with pytest.raises(CatalogError, match="no price at all"):
        parse("entries:" + GOOD_ENTRY.replace('{input: "1.00", output: "2.00"}', "{}"))


def test_not_yaml_is_refused() -> None:
    with pytest.raises(CatalogError, match=r"custom\.yaml: not valid YAML"):
        parse("entries: [")
