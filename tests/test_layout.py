"""The layout's one-way imports (DESIGN, "Second wave: layout"): each wing imports only from the
wings below it, so a newcomer can read ``proxy/http`` without knowing the meter or the metrics.

    proxy/http  <-  proxy/usage, proxy/teams, proxy/observe  <-  proxy/admin  <-  app, cli, commands
    proxy  ->  storage  ->  pricing   (pricing imports nothing of ours)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each folder may import from this project (prefixes). Top-level shared modules
# (proxy.settings, proxy.config) are settings: any wing may read them.
ALLOWED: dict[str, tuple[str, ...]] = {
    "pricing": ("pricing",),
    "storage": ("storage", "pricing"),
    "proxy/http": ("proxy.http", "proxy.settings", "storage", "pricing"),
    "proxy/usage": ("proxy.usage", "proxy.http", "proxy.settings", "storage", "pricing"),
    "proxy/teams": ("proxy.teams", "proxy.http", "proxy.settings", "storage", "pricing"),
    "proxy/observe": ("proxy.observe", "proxy.http", "proxy.settings", "storage", "pricing"),
    "proxy/admin": (
        "proxy.admin",
        "proxy.usage",
        "proxy.teams",
        "proxy.observe",
        "proxy.http",
        "proxy.settings",
        "storage",
        "pricing",
    ),
    # The demo wires the whole product (like app.py) in front of its simulated upstream.
    "proxy/demo": ("proxy", "storage", "pricing"),
}
OURS = ("proxy", "storage", "pricing")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [n for n in names if n.split(".")[0] in OURS]


def _cases() -> list[tuple[str, Path]]:
    cases = []
    for folder in ALLOWED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts and folder == "storage":
                continue
            cases.append((folder, path))
    return cases


@pytest.mark.parametrize(("folder", "path"), _cases(), ids=lambda v: str(v))
def test_imports_point_one_way(folder: str, path: Path) -> None:
    allowed = ALLOWED[folder]
    bad = [
        name
        for name in _imports(path)
        if not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; {folder} may import only {allowed}"


def test_no_loose_modules_in_proxy() -> None:
    """``proxy/`` holds only the composition root, the CLI and settings; the rest lives in wings."""
    loose = sorted(p.name for p in (ROOT / "proxy").glob("*.py"))
    assert loose == ["__init__.py", "app.py", "cli.py", "config.py", "settings.py"]
