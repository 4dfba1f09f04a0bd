"""Writes the Grafana dashboards (``dashboards/*.json``) from one readable description.

Run ``python dashboards/generate.py`` after editing; ``tests/dashboards/test_dashboards.py``
fails when the committed JSON differs from what this produces, and evaluates every query against a
real Prometheus / PostgreSQL. Stdlib only (it is not part of the installed package).

Data sources are referenced by the fixed uids provisioned in
``dashboards/provisioning/datasources/datasources.yaml``: ``prometheus`` and ``ledger`` (PostgreSQL).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39

PROM = {"type": "prometheus", "uid": "prometheus"}
PG = {"type": "grafana-postgresql-datasource", "uid": "ledger"}

Json = dict[str, Any]

# Grafana-side selectors shared by the Prometheus dashboards.
TM = 'team=~"$team", model=~"$model"'
RI = "$__rate_interval"


def prom(expr: str, legend: str = "", instant: bool = False) -> Json:
    target: Json = {"datasource": PROM, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        target.update(instant=True, range=False)
    else:
        target.update(range=True)
    return target


def sql(raw: str, fmt: str = "table") -> Json:
    return {"datasource": PG, "rawSql": raw, "format": fmt, "rawQuery": True, "editorMode": "code"}


class Board:
    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.uid = uid
        self.title = title
        self.description = description
        self.tags = tags
        self.panels: list[Json] = []
        self.variables: list[Json] = []
        self._x = 0
        self._y = 0
        self._row_h = 0

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[Json],
        *,
        w: int = 12,
        h: int = 8,
        unit: str | None = None,
        decimals: int | None = None,
        description: str = "",
        options: Json | None = None,
        custom: Json | None = None,
    ) -> None:
        if self._x + w > 24:
            self._x = 0
            self._y += self._row_h
            self._row_h = 0
        defaults: Json = {}
        if unit is not None:
            defaults["unit"] = unit
        if decimals is not None:
            defaults["decimals"] = decimals
        if custom is not None:
            defaults["custom"] = custom
        datasource = targets[0]["datasource"]
        for i, target in enumerate(targets):
            target["refId"] = chr(ord("A") + i)
        panel: Json = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": datasource,
            "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or {},
        }
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def prom_var(self, name: str, label: str, metric: str) -> None:
        query = f"label_values({metric}, {label})"
        self.variables.append(
            {
                "name": name,
                "label": label,
                "type": "query",
                "datasource": PROM,
                "definition": query,
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "refresh": 2,
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 1,
            }
        )

    def sql_var(self, name: str, query: str) -> None:
        self.variables.append(
            {
                "name": name,
                "label": name,
                "type": "query",
                "datasource": PG,
                "definition": query,
                "query": query,
                "refresh": 2,
                "includeAll": True,
                "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 1,
            }
        )

    def to_json(self, time_from: str = "now-24h") -> Json:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["openai-meter", *self.tags],
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "time": {"from": time_from, "to": "now"},
            "timezone": "utc",
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["openai-meter"],
                    "asDropdown": True,
                    "title": "openai-meter",
                }
            ],
            "panels": self.panels,
        }


STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
BARS = {"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal", "group": "A"}}
STACKED = {"fillOpacity": 30, "stacking": {"mode": "normal", "group": "A"}}
TABLE = {"showHeader": True, "cellHeight": "sm"}


def spend() -> Board:
    b = Board(
        "openai-meter-spend",
        "openai-meter / Spend",
        "Spend per team, model and service tier from Prometheus counters (float; the ledger "
        "dashboard has the exact figures).",
        ["spend"],
    )
    b.prom_var("team", "team", "openai_meter_requests_total")
    b.prom_var("model", "model", "openai_meter_requests_total")
    cost = f"openai_meter_cost_usd_total{{{TM}}}"
    b.panel(
        "stat",
        "Spend in range",
        [prom(f"sum(increase({cost}[$__range]))", "spend", instant=True)],
        w=6,
        h=5,
        unit="currencyUSD",
        decimals=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "Spend by team in range",
        [prom(f"sum by (team) (increase({cost}[$__range]))", "{{team}}", instant=True)],
        w=6,
        h=5,
        unit="currencyUSD",
        decimals=4,
        options=STAT,
    )
    b.panel(
        "stat",
        "Unpriced calls in range",
        [
            prom(
                'sum by (model) (increase(openai_meter_unpriced_requests_total{model=~"$model"}'
                "[$__range]))",
                "{{model}}",
                instant=True,
            )
        ],
        w=6,
        h=5,
        description="Calls whose model has no price: recorded with cost NULL, never as $0. "
        "Add the model to the catalog or a pricing override.",
        options=STAT,
    )
    b.panel(
        "stat",
        "Estimated usage share",
        [
            prom(
                f"sum(increase(openai_meter_estimated_usage_total[$__range])) / "
                f"sum(increase(openai_meter_requests_total{{{TM}}}[$__range]))",
                "estimated share",
                instant=True,
            )
        ],
        w=6,
        h=5,
        unit="percentunit",
        description="Share of calls whose usage was counted locally with tiktoken (stream cut, "
        "no usage in the response) instead of reported by OpenAI.",
        options=STAT,
    )
    b.panel(
        "timeseries",
        "Spend rate per team (USD/hour)",
        [prom(f"sum by (team) (rate({cost}[{RI}])) * 3600", "{{team}}")],
        unit="currencyUSD",
        custom=STACKED,
    )
    b.panel(
        "timeseries",
        "Spend rate per model (USD/hour)",
        [prom(f"sum by (model) (rate({cost}[{RI}])) * 3600", "{{model}}")],
        unit="currencyUSD",
        custom=STACKED,
    )
    b.panel(
        "timeseries",
        "Spend rate per service tier (USD/hour)",
        [prom(f"sum by (service_tier) (rate({cost}[{RI}])) * 3600", "{{service_tier}}")],
        unit="currencyUSD",
        custom=STACKED,
    )
    b.panel(
        "bargauge",
        "Top models by spend in range",
        [
            prom(
                f"topk(10, sum by (model) (increase({cost}[$__range])))",
                "{{model}}",
                instant=True,
            )
        ],
        unit="currencyUSD",
        decimals=4,
        options={**STAT, "orientation": "horizontal", "displayMode": "gradient"},
    )
    b.panel(
        "timeseries",
        "Tokens per second by type",
        [
            prom(
                f"sum by (type) (rate(openai_meter_tokens_total{{{TM}}}[{RI}]))",
                "{{type}}",
            )
        ],
        unit="short",
        description="input and output are totals; cached_input, cache_write, audio_* and image_* "
        "are parts of input; reasoning and audio_output are parts of output.",
    )
    b.panel(
        "timeseries",
        "Unpriced and estimated calls",
        [
            prom(
                f'sum by (model) (increase(openai_meter_unpriced_requests_total{{model=~"$model"}}'
                f"[{RI}]))",
                "unpriced {{model}}",
            ),
            prom(
                f"sum by (endpoint, reason) (increase(openai_meter_estimated_usage_total[{RI}]))",
                "estimated {{endpoint}} ({{reason}})",
            ),
        ],
        unit="short",
        custom=BARS,
    )
    b.panel(
        "bargauge",
        "Budget used",
        [
            prom(
                'openai_meter_budget_spent_usd{team=~"$team"} / '
                'openai_meter_budget_limit_usd{team=~"$team"}',
                "{{team}} {{period}}",
                instant=True,
            )
        ],
        w=24,
        h=6,
        unit="percentunit",
        options={**STAT, "orientation": "horizontal", "displayMode": "lcd", "minVizHeight": 10},
        description="Spent / limit per team and budget period.",
    )
    # Does it match the bill? (issue 13: set by the server's reconcile.interval runs)
    b.panel(
        "bargauge",
        "Captured vs OpenAI's bill (per project)",
        [prom("openai_meter_reconcile_captured_ratio", "{{project}}", instant=True)],
        w=24,
        h=6,
        unit="percentunit",
        options={**STAT, "orientation": "horizontal", "displayMode": "lcd", "minVizHeight": 10},
        description="Ledger cost / OpenAI's billed USD (Admin API Costs) per project over the "
        "latest reconciliation's days; below 98% means spend went around the proxy or unpriced "
        "(openai-meter reconcile names the causes).",
    )
    return b


def traffic() -> Board:
    b = Board(
        "openai-meter-traffic",
        "openai-meter / Traffic & latency",
        "Request rate, errors, latency percentiles, time to first token, the proxy's own "
        "overhead and upstream rate-limit headroom.",
        ["traffic"],
    )
    b.prom_var("team", "team", "openai_meter_requests_total")
    b.prom_var("model", "model", "openai_meter_requests_total")
    req = f"openai_meter_requests_total{{{TM}}}"
    b.panel(
        "timeseries",
        "Requests per second by endpoint",
        [prom(f"sum by (endpoint) (rate({req}[{RI}]))", "{{endpoint}}")],
        unit="reqps",
        custom=STACKED,
    )
    b.panel(
        "timeseries",
        "Error ratio by status class",
        [
            prom(
                f"sum by (status_class) (rate(openai_meter_requests_total{{{TM}, "
                f'status_class!="2xx"}}[{RI}])) / scalar(sum(rate({req}[{RI}])))',
                "{{status_class}}",
            )
        ],
        unit="percentunit",
        description="none = no upstream response at all (unreachable, timeout, client gone first).",
    )
    dur = f'openai_meter_request_duration_seconds_bucket{{model=~"$model"}}[{RI}]'
    b.panel(
        "timeseries",
        "Request duration p50 / p95 / p99",
        [
            prom(f"histogram_quantile({q}, sum by (le) (rate({dur})))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "Request duration p95 by model",
        [prom(f"histogram_quantile(0.95, sum by (le, model) (rate({dur})))", "{{model}}")],
        unit="s",
    )
    ttft = f'openai_meter_time_to_first_token_seconds_bucket{{model=~"$model"}}[{RI}]'
    b.panel(
        "timeseries",
        "Time to first token (streams) p50 / p95",
        [
            prom(f"histogram_quantile(0.5, sum by (le, model) (rate({ttft})))", "p50 {{model}}"),
            prom(f"histogram_quantile(0.95, sum by (le, model) (rate({ttft})))", "p95 {{model}}"),
        ],
        unit="s",
    )
    ovh = f"openai_meter_proxy_overhead_seconds_bucket[{RI}]"
    b.panel(
        "timeseries",
        "Proxy overhead p50 / p99",
        [
            prom(f"histogram_quantile(0.5, sum by (le) (rate({ovh})))", "p50"),
            prom(f"histogram_quantile(0.99, sum by (le) (rate({ovh})))", "p99"),
        ],
        unit="s",
        description="Time the proxy itself adds to a call. Budget: well under a millisecond.",
    )
    b.panel(
        "timeseries",
        "Upstream rate-limit headroom (remaining / limit)",
        [
            prom(
                'openai_meter_upstream_ratelimit_remaining{model=~"$model"} / '
                'openai_meter_upstream_ratelimit_limit{model=~"$model"}',
                "{{kind}} {{model}}",
            )
        ],
        unit="percentunit",
        description="From the x-ratelimit-* headers of the latest upstream response per model.",
    )
    b.panel(
        "timeseries",
        "Requests per minute vs usage-tier RPM",
        [
            prom(
                f'sum by (model) (rate(openai_meter_requests_total{{model=~"$model"}}[{RI}])) * 60'
                ' / on (model) openai_meter_usage_tier_limit{kind="rpm"}',
                "{{model}}",
            )
        ],
        unit="percentunit",
        description="Observed RPM as a share of OpenAI's published limit for the configured "
        "metrics.usage_tier (only models with a published table).",
    )
    b.panel(
        "timeseries",
        "Metering errors by stage",
        [
            prom(
                f"sum by (stage) (increase(openai_meter_metering_errors_total[{RI}]))",
                "{{stage}}",
            )
        ],
        unit="short",
        custom=BARS,
        description="Failures inside metering; the calls themselves went on.",
    )
    genai = f"gen_ai_client_operation_duration_seconds_bucket[{RI}]"
    b.panel(
        "timeseries",
        "GenAI operation duration p95 (OpenTelemetry semconv)",
        [
            prom(
                "histogram_quantile(0.95, sum by (le, gen_ai_operation_name, "
                f"gen_ai_request_model) (rate({genai})))",
                "{{gen_ai_operation_name}} {{gen_ai_request_model}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "GenAI tokens per second by type (OpenTelemetry semconv)",
        [
            prom(
                "sum by (gen_ai_token_type, gen_ai_response_model) "
                f"(rate(gen_ai_client_token_usage_sum[{RI}]))",
                "{{gen_ai_token_type}} {{gen_ai_response_model}}",
            )
        ],
        unit="short",
    )
    return b


def ledger_health() -> Board:
    b = Board(
        "openai-meter-ledger",
        "openai-meter / Ledger health",
        "Whether every call reaches the SQL ledger: queue depth, writes, spooling and errors.",
        ["ledger"],
    )
    b.panel(
        "timeseries",
        "Records waiting to be written",
        [prom("sum(openai_meter_ledger_pending_records)", "pending")],
        unit="short",
    )
    b.panel(
        "timeseries",
        "Records written per second",
        [prom(f"sum(rate(openai_meter_ledger_written_records_total[{RI}]))", "written")],
        unit="short",
    )
    b.panel(
        "timeseries",
        "Records spooled to disk",
        [prom(f"sum(increase(openai_meter_ledger_spooled_records_total[{RI}]))", "spooled")],
        unit="short",
        custom=BARS,
        description="The database was unreachable or the queue full: records went to the local "
        "spool and are replayed when the database answers again.",
    )
    b.panel(
        "timeseries",
        "Ledger write errors",
        [prom(f"sum(increase(openai_meter_ledger_write_errors_total[{RI}]))", "errors")],
        unit="short",
        custom=BARS,
    )
    b.panel(
        "timeseries",
        "Calls metered vs records written",
        [
            prom(f"sum(rate(openai_meter_requests_total[{RI}]))", "metered"),
            prom(f"sum(rate(openai_meter_ledger_written_records_total[{RI}]))", "written"),
        ],
        w=24,
        unit="reqps",
        description="Over time these two lines agree; a lasting gap means records are spooling.",
    )
    return b


TEAM_DAY_WHERE = "day BETWEEN $__timeFrom()::date AND $__timeTo()::date AND team IN ($team)"


def team_spend() -> Board:
    b = Board(
        "openai-meter-team-spend",
        "openai-meter / Team spend (ledger)",
        "Exact per-team, per-day spend straight from the SQL ledger (PostgreSQL NUMERIC). "
        "Days are UTC.",
        ["spend", "ledger"],
    )
    b.sql_var("team", "SELECT DISTINCT team FROM usage_daily ORDER BY team")
    b.panel(
        "timeseries",
        "Spend per team per day (USD)",
        [
            sql(
                "SELECT day::timestamptz AS time, team AS metric, SUM(cost_usd) AS value\n"
                f"FROM usage_daily\nWHERE {TEAM_DAY_WHERE}\n"
                "GROUP BY day, team\nORDER BY day, team",
                fmt="time_series",
            )
        ],
        w=24,
        unit="currencyUSD",
        decimals=6,
        custom=BARS,
    )
    b.panel(
        "table",
        "Spend per team and day (exact)",
        [
            sql(
                "SELECT day, team, SUM(requests) AS requests, SUM(input_tokens) AS input_tokens,\n"
                "  SUM(cached_input_tokens) AS cached_input_tokens,\n"
                "  SUM(output_tokens) AS output_tokens, SUM(reasoning_tokens) AS reasoning_tokens,\n"
                "  SUM(cost_usd)::text AS cost_usd, SUM(unpriced_requests) AS unpriced_requests,\n"
                "  SUM(estimated_requests) AS estimated_requests\n"
                f"FROM usage_daily\nWHERE {TEAM_DAY_WHERE}\n"
                "GROUP BY day, team\nORDER BY day DESC, team"
            )
        ],
        w=24,
        h=10,
        options=TABLE,
        description="cost_usd is the exact decimal sum from the ledger (shown as text so no digit "
        "is rounded away).",
    )
    b.panel(
        "table",
        "Team totals in range",
        [
            sql(
                "SELECT team, SUM(requests) AS requests, SUM(cost_usd)::text AS cost_usd,\n"
                "  SUM(unpriced_requests) AS unpriced_requests,\n"
                "  SUM(estimated_requests) AS estimated_requests\n"
                f"FROM usage_daily\nWHERE {TEAM_DAY_WHERE}\n"
                "GROUP BY team\nORDER BY SUM(cost_usd) DESC, team"
            )
        ],
        options=TABLE,
    )
    b.panel(
        "table",
        "Spend per team and model in range",
        [
            sql(
                "SELECT team, NULLIF(model, '') AS model, NULLIF(service_tier, '') AS service_tier,\n"
                "  SUM(requests) AS requests, SUM(cost_usd)::text AS cost_usd\n"
                f"FROM usage_daily\nWHERE {TEAM_DAY_WHERE}\n"
                "GROUP BY team, model, service_tier\nORDER BY SUM(cost_usd) DESC, team, model"
            )
        ],
        options=TABLE,
    )
    b.panel(
        "table",
        "Latest unpriced calls",
        [
            sql(
                "SELECT started_at, team, endpoint, model, input_tokens, output_tokens,\n"
                "  unpriced_reason\n"
                "FROM usage_records\n"
                "WHERE $__timeFilter(started_at) AND cost_usd IS NULL AND team IN ($team)\n"
                "ORDER BY started_at DESC\nLIMIT 100"
            )
        ],
        w=24,
        options=TABLE,
        description="cost NULL = the call could not be priced (see unpriced_reason).",
    )
    return b


BOARDS = {
    "spend.json": spend,
    "traffic-latency.json": traffic,
    "ledger-health.json": ledger_health,
    "team-spend-ledger.json": team_spend,
}


def render() -> dict[str, str]:
    return {
        name: json.dumps(build().to_json(), indent=2, sort_keys=False) + "\n"
        for name, build in BOARDS.items()
    }


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
