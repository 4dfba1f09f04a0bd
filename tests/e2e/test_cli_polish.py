"""The CLI a newcomer meets (issue 12): ``--help`` and each sub-command import only what they need
(checked on the import graph, not with a stopwatch -- times are in docs/performance.md), help text
without raw docstring markup, and a pyproject the build does not warn about."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.commands import report

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "sqlalchemy", "tiktoken", "alembic", "prometheus_client", "pydantic", "yaml")
PROBE = """
import sys
from proxy.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("MODULES", " ".join(sorted(m for m in sys.modules if "." not in m)), file=sys.stderr)
"""


def loaded_after(args: list[str], **env: str) -> set[str]:
    """Top-level packages in sys.modules after running ``openai-meter ARGS`` in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [x for x in result.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return set(line.split()[1:])


SUBCOMMANDS = [
    "serve",
    "report",
    "prices",
    "db",
    "keys",
    "encodings",
    "demo",
    "reconcile",
    "export",
]


@pytest.mark.parametrize("args", [["--help"], *([c, "--help"] for c in SUBCOMMANDS)])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    loaded = loaded_after(args)
    assert "proxy" in loaded  # the probe did run the CLI
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_report_imports_no_http_stack_and_no_tokenizer(tmp_path: Path) -> None:
    loaded = loaded_after(["report", "--database-url", f"sqlite:///{tmp_path}/none.db"])
    assert "sqlalchemy" in loaded  # it did get as far as the database
    assert not loaded & {"aiohttp", "tiktoken", "alembic", "prometheus_client"}


def test_prices_imports_no_database_or_http_stack() -> None:
    loaded = loaded_after(["prices", "gpt-4o-mini"])
    assert "pricing" in loaded
    assert not loaded & {"aiohttp", "sqlalchemy", "tiktoken", "alembic"}


def test_report_formats_match_the_report_module() -> None:
    from proxy.admin.reporting import FORMATS

    assert report.FORMATS == FORMATS


def help_text(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--help"])
    return capsys.readouterr().out


def test_every_command_and_action_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    top = help_text(capsys=capsys)
    for command in SUBCOMMANDS:
        assert command in top
        text = help_text(command, capsys=capsys)
        usage_and_description = text.split("\n\n")
        assert len(usage_and_description) >= 3, f"{command} --help has no description"
    assert "virtual keys" in help_text("keys", capsys=capsys)
    assert "migrates" in help_text("db", capsys=capsys)
    create = help_text("keys", "create", capsys=capsys)
    assert "--team TEAM" in create and "attributed to" in create


def test_prices_help_has_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text("prices", capsys=capsys)
    assert "``" not in text and ":class:" not in text
    assert "+override" in text and "-N%" in text and "%%" not in text
    assert "prices check" in text


def test_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """No option left bare in any help page (argparse prints '  --flag X' with nothing after)."""
    parser = build_parser()
    pages = [parser]
    seen = []
    while pages:
        page = pages.pop()
        seen.append(page.prog)
        for action in page._actions:
            if action.choices and isinstance(action.choices, dict):
                pages.extend(action.choices.values())
            elif action.option_strings and action.dest not in ("help", "format"):
                assert action.help, f"{page.prog} {action.option_strings} has no help"
    assert "openai-meter keys create" in seen


def test_pyproject_license_is_an_spdx_string() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in project["project"].get("classifiers", []))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert "setuptools>=77" in requires  # PEP 639 license strings need setuptools 77+


def test_reconcile_format_choices_are_the_renderers() -> None:
    """``reconcile --format`` lists its choices without importing the renderer (``--help`` stays
    light); they must stay the renderer's."""
    from proxy.admin.reconcile.render import FORMATS
    from proxy.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fmt = next(a for a in sub.choices["reconcile"]._actions if a.dest == "format")
    assert tuple(fmt.choices or ()) == FORMATS
