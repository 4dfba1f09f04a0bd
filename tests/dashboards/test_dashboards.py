"""Static checks of dashboards/: generated files current, Grafana-loadable shape, every metric real."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from pricing.book import PriceBook
from proxy.observe.metrics import Metrics, ReconcileMetrics
from proxy.observe.savings import record_savings
from tests.proxy.observe.test_metrics import record
from tests.support.dashboards import (
    ALERTS_FILE,
    DASHBOARDS_DIR,
    exposition_names,
    load_dashboards,
    metric_names,
    prom_queries,
    sql_queries,
)

EXPECTED_BOARDS = {
    "spend.json",
    "traffic-latency.json",
    "ledger-health.json",
    "team-spend-ledger.json",
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dash_generate", DASHBOARDS_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_the_generator_writes() -> None:
    rendered = _generator().render()
    assert set(rendered) == EXPECTED_BOARDS
    for name, text in rendered.items():
        assert (DASHBOARDS_DIR / name).read_text() == text, (
            f"dashboards/{name} is stale: run python dashboards/generate.py"
        )


def _round_trip(board: dict[str, Any]) -> Any:
    """A dashboard decoded into the Foundation SDK's typed models (Grafana's schema) and encoded
    back: anything the schema does not know is dropped, anything mistyped changes shape."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    return json.loads(json.dumps(Dashboard.from_json(copy.deepcopy(board)), cls=JSONEncoder))


def test_dashboards_round_trip_through_grafanas_schema_types() -> None:
    boards = load_dashboards()
    for name, board in boards.items():
        assert _round_trip(board) == board, name
    # the check can fail: an option Grafana's schema does not have does not survive
    board = copy.deepcopy(boards["spend.json"])
    board["panels"][0]["fieldConfig"]["defaults"]["unitt"] = "currencyUSD"
    assert _round_trip(board) != board
    board = copy.deepcopy(boards["spend.json"])
    board["graphTooltipp"] = 1
    assert _round_trip(board) != board


def test_generator_keeps_a_place_for_the_reconcile_and_savings_panels() -> None:
    source = (DASHBOARDS_DIR / "generate.py").read_text()
    generator = _generator()
    for hook in ("reconcile_panels", "savings_panels"):
        assert callable(getattr(generator, hook))
        assert f"    {hook}(b)" in source, f"{hook} is no longer called by a board"


def test_dashboards_are_current_grafana_json_with_provisioned_datasources() -> None:
    provisioned = yaml.safe_load(
        (DASHBOARDS_DIR / "provisioning/datasources/datasources.yaml").read_text()
    )
    uids = {(ds["type"], ds["uid"]) for ds in provisioned["datasources"]}
    uids_seen: set[str] = set()
    for name, board in load_dashboards().items():
        assert board["schemaVersion"] >= 39, name
        assert board["uid"] not in uids_seen
        uids_seen.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in board["panels"]:
            for target in [panel, *panel["targets"]]:
                ds = target["datasource"]
                assert (ds["type"], ds["uid"]) in uids, f"{name} / {panel['title']}: {ds}"
            assert panel["targets"], f"{name} / {panel['title']} has no query"


def test_every_board_has_what_the_issue_asks_for() -> None:
    titles = {
        name: " | ".join(p["title"] for p in board["panels"])
        for name, board in load_dashboards().items()
    }
    for needle in ("per team", "per model", "service tier", "Top models", "Unpriced", "Estimated"):
        assert needle.lower() in titles["spend.json"].lower(), needle
    for needle in ("Requests per second", "Error", "p50 / p95 / p99", "first token", "overhead",
                   "headroom"):  # fmt: skip
        assert needle.lower() in titles["traffic-latency.json"].lower(), needle
    for needle in ("waiting", "spooled", "errors"):
        assert needle in titles["ledger-health.json"].lower(), needle
    assert sql_queries()  # the ledger board is SQL


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (team) (rate(openai_meter_cost_usd_total{team=~"$team"}[5m])) * 3600',
         {"openai_meter_cost_usd_total"}),
        ("histogram_quantile(0.95, sum by (le, model) (rate(x_bucket[1m])))", {"x_bucket"}),
        ('a / on (model) b{kind="rpm"} > 0.8', {"a", "b"}),
        ("scalar(sum(up)) + 1e3", {"up"}),
        ('sum without (instance) (c{l="by (x)"}) or vector(0)', {"c"}),
        ("count by (team) (openai_meter_requests_total)", {"openai_meter_requests_total"}),
    ],
)  # fmt: skip
def test_metric_names_are_parsed_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_metric_a_dashboard_or_alert_uses_is_exported() -> None:
    """Static twin of the live test: the proxy's metrics plus the ledger writer's, after traffic."""
    from storage.writer import LedgerMetrics

    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        models=["gpt-4o-mini"],
        teams=["search"],
        usage_tier="tier1",
        savings=record_savings(PriceBook.load()),  # record() has cached input: a saving
    )
    LedgerMetrics(registry)
    metrics.submit(record(stream=True, ttft_ms=20.0))
    metrics.submit(record(model="mystery", cost_usd=None, usage_source="estimated"))
    metrics.observe_overhead(0.0002)
    metrics.set_budget("search", "daily", Decimal("1"), Decimal("10"))
    ReconcileMetrics(registry).set("proj_main", Decimal("2.5"), Decimal("0.99"))
    metrics.observe_ratelimit_headers(
        {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499"},
        model="gpt-4o-mini",
    )
    exported = exposition_names(generate_latest(registry).decode())
    queries = prom_queries()
    assert len(queries) > 30
    missing = {(q.where, name) for q in queries for name in metric_names(q.evaluable) - exported}
    assert not missing


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS_FILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wires_every_file_it_mounts() -> None:
    root = DASHBOARDS_DIR.parent
    compose = yaml.safe_load((root / "docker-compose.yaml").read_text())
    assert set(compose["services"]) == {"proxy", "postgres", "prometheus", "grafana"}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert Path(root, source).exists(), f"compose mounts missing {source}"
