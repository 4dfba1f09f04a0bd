"""Writes the Grafana dashboards (``dashboards/*.json``) with Grafana Labs' Foundation SDK.

Run ``python dashboards/generate.py`` after editing (needs the dev extra: ``grafana-foundation-sdk``);
``tests/dashboards/test_dashboards.py`` fails when the committed JSON differs from what this
produces, and ``tests/dashboards/test_prometheus_live.py`` evaluates every query against a real
Prometheus / PostgreSQL. The SDK's typed builders (``grafana_foundation_sdk.builders.*``) produce
JSON that follows Grafana's own schema types (the SDK build for the Grafana version that
docker-compose runs: 11.3), so a misspelt option is an ``AttributeError`` here, not a panel that
silently ignores it.

Data sources are referenced by the fixed uids provisioned in
``dashboards/provisioning/datasources/datasources.yaml``: ``prometheus`` and ``ledger`` (PostgreSQL).

Panels of other wings live in their own functions: reconciliation (``reconcile_captured_ratio``)
in :func:`reconcile_panels`, savings (``savings_usd_total{model,team,kind}``) in
:func:`savings_panels`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

HERE = Path(__file__).resolve().parent

PROM = model.DataSourceRef(type_val="prometheus", uid="prometheus")
PG = model.DataSourceRef(type_val="grafana-postgresql-datasource", uid="ledger")

# Grafana-side selectors shared by the Prometheus dashboards.
TM = 'team=~"$team", model=~"$model"'
RI = "$__rate_interval"

Query = cogbuilder.Builder[cogvariants.Dataquery]
P = TypeVar("P", timeseries.Panel, stat.Panel, bargauge.Panel, table.Panel)


def prom(expr: str, legend: str = "", instant: bool = False) -> Query:
    query = (
        prometheus_builders.Dataquery()
        .datasource(PROM)
        .expr(expr)
        .legend_format(legend or "__auto")
    )
    return query.instant() if instant else query.range()


class SqlQuery(cogvariants.Dataquery):
    """A query of Grafana's PostgreSQL data source (the SDK ships no builder for it; this is its
    documented target shape: ``rawSql``, ``format``, ``rawQuery``, ``editorMode``)."""

    def __init__(self, raw_sql: str, fmt: str) -> None:
        self.raw_sql = raw_sql
        self.format = fmt
        self.ref_id = ""

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": PG.to_json(),
            "rawSql": self.raw_sql,
            "format": self.format,
            "rawQuery": True,
            "editorMode": "code",
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str, fmt: str) -> None:
        self._internal = SqlQuery(raw_sql, fmt)

    def build(self) -> SqlQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Sql:
        self._internal.ref_id = ref_id
        return self


def sql(raw: str, fmt: str = "table") -> Query:
    return Sql(raw, fmt)


def _ref_id(query: Query, ref: str) -> Query:
    return query.ref_id(ref)  # type: ignore[attr-defined, no-any-return]  # every query has one


# --- panel styles (typed builder calls instead of raw option dicts) -------------------------------


def _last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def _stacked() -> common_builders.StackingConfig:
    return common_builders.StackingConfig().mode(common.StackingMode.NORMAL).group("A")


def LINES(p: Any) -> Any:
    """The default for time series (explicit, so the JSON round-trips through the SDK's types)."""
    return p.draw_style(common.GraphDrawStyle.LINE).fill_opacity(10)


def STAT(p: Any) -> Any:
    return p.reduce_options(_last_value())


def STACKED(p: Any) -> Any:
    return p.fill_opacity(30).stacking(_stacked())


def BARS(p: Any) -> Any:
    return p.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80).stacking(_stacked())


def TABLE(p: Any) -> Any:
    return p.show_header(True).cell_height(common.TableCellHeight.SM)


def TOP_BARS(p: Any) -> Any:
    return (
        STAT(p)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
    )


def BUDGET_BARS(p: Any) -> Any:
    return (
        STAT(p)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.LCD)
        .min_viz_height(10)
    )


class Board:
    """One dashboard: the SDK's builder plus panel ids, query refIds and a row-filling layout."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.builder = (
            dash.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["openai-meter", *tags])
            .version(1)
            .editable()
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .refresh("30s")
            .time("now-24h", "now")
            .timezone("utc")
            .link(
                dash.DashboardLink("openai-meter")
                .type(model.DashboardLinkType.DASHBOARDS)
                .tags(["openai-meter"])
                .as_dropdown(True)
            )
        )
        self._ids = 0
        self._x = 0
        self._y = 0
        self._row_h = 0

    def panel(
        self,
        builder: P,
        title: str,
        targets: list[Query],
        *,
        w: int = 12,
        h: int = 8,
        unit: str | None = None,
        decimals: int | None = None,
        description: str = "",
        style: Callable[[Any], Any] | None = None,
    ) -> None:
        if self._x + w > 24:
            self._x = 0
            self._y += self._row_h
            self._row_h = 0
        self._ids += 1
        datasource = PG if isinstance(targets[0], Sql) else PROM
        builder = (
            builder.id(self._ids)
            .title(title)
            .description(description)
            .datasource(datasource)
            .grid_pos(model.GridPos(h=h, w=w, x=self._x, y=self._y))
        )
        for i, target in enumerate(targets):
            builder = builder.with_target(_ref_id(target, chr(ord("A") + i)))
        if unit is not None:
            builder = builder.unit(unit)
        if decimals is not None:
            builder = builder.decimals(decimals)
        if style is None and isinstance(builder, timeseries.Panel):
            style = LINES
        if style is not None:
            builder = style(builder)
        self.builder.with_panel(builder)
        self._x += w
        self._row_h = max(self._row_h, h)

    def _variable(self, name: str, label: str, datasource: model.DataSourceRef) -> Any:
        return (
            dash.QueryVariable(name)
            .label(label)
            .datasource(datasource)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .multi(True)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )

    def prom_var(self, name: str, label: str, metric: str) -> None:
        query = f"label_values({metric}, {label})"
        self.builder.with_variable(
            self._variable(name, label, PROM)
            .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
            .all_value(".*")
        )

    def sql_var(self, name: str, query: str) -> None:
        self.builder.with_variable(self._variable(name, name, PG).query(query))

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))
        return encoded


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
        stat.Panel(),
        "Spend in range",
        [prom(f"sum(increase({cost}[$__range]))", "spend", instant=True)],
        w=6,
        h=5,
        unit="currencyUSD",
        decimals=4,
        style=STAT,
    )
    b.panel(
        stat.Panel(),
        "Spend by team in range",
        [prom(f"sum by (team) (increase({cost}[$__range]))", "{{team}}", instant=True)],
        w=6,
        h=5,
        unit="currencyUSD",
        decimals=4,
        style=STAT,
    )
    b.panel(
        stat.Panel(),
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
        style=STAT,
    )
    b.panel(
        stat.Panel(),
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
        style=STAT,
    )
    b.panel(
        timeseries.Panel(),
        "Spend rate per team (USD/hour)",
        [prom(f"sum by (team) (rate({cost}[{RI}])) * 3600", "{{team}}")],
        unit="currencyUSD",
        style=STACKED,
    )
    b.panel(
        timeseries.Panel(),
        "Spend rate per model (USD/hour)",
        [prom(f"sum by (model) (rate({cost}[{RI}])) * 3600", "{{model}}")],
        unit="currencyUSD",
        style=STACKED,
    )
    b.panel(
        timeseries.Panel(),
        "Spend rate per service tier (USD/hour)",
        [prom(f"sum by (service_tier) (rate({cost}[{RI}])) * 3600", "{{service_tier}}")],
        unit="currencyUSD",
        style=STACKED,
    )
    b.panel(
        bargauge.Panel(),
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
        style=TOP_BARS,
    )
    b.panel(
        timeseries.Panel(),
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
        timeseries.Panel(),
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
        style=BARS,
    )
    b.panel(
        bargauge.Panel(),
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
        style=BUDGET_BARS,
        description="Spent / limit per team and budget period.",
    )
    reconcile_panels(b)
    savings_panels(b)  # <- the savings branch's panels (see savings_panels)
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
        timeseries.Panel(),
        "Requests per second by endpoint",
        [prom(f"sum by (endpoint) (rate({req}[{RI}]))", "{{endpoint}}")],
        unit="reqps",
        style=STACKED,
    )
    b.panel(
        timeseries.Panel(),
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
        timeseries.Panel(),
        "Request duration p50 / p95 / p99",
        [
            prom(f"histogram_quantile({q}, sum by (le) (rate({dur})))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
    )
    b.panel(
        timeseries.Panel(),
        "Request duration p95 by model",
        [prom(f"histogram_quantile(0.95, sum by (le, model) (rate({dur})))", "{{model}}")],
        unit="s",
    )
    ttft = f'openai_meter_time_to_first_token_seconds_bucket{{model=~"$model"}}[{RI}]'
    b.panel(
        timeseries.Panel(),
        "Time to first token (streams) p50 / p95",
        [
            prom(f"histogram_quantile(0.5, sum by (le, model) (rate({ttft})))", "p50 {{model}}"),
            prom(f"histogram_quantile(0.95, sum by (le, model) (rate({ttft})))", "p95 {{model}}"),
        ],
        unit="s",
    )
    ovh = f"openai_meter_proxy_overhead_seconds_bucket[{RI}]"
    b.panel(
        timeseries.Panel(),
        "Proxy overhead p50 / p99",
        [
            prom(f"histogram_quantile(0.5, sum by (le) (rate({ovh})))", "p50"),
            prom(f"histogram_quantile(0.99, sum by (le) (rate({ovh})))", "p99"),
        ],
        unit="s",
        description="Time the proxy itself adds to a call. Budget: well under a millisecond.",
    )
    b.panel(
        timeseries.Panel(),
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
        timeseries.Panel(),
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
        timeseries.Panel(),
        "Metering errors by stage",
        [
            prom(
                f"sum by (stage) (increase(openai_meter_metering_errors_total[{RI}]))",
                "{{stage}}",
            )
        ],
        unit="short",
        style=BARS,
        description="Failures inside metering; the calls themselves went on.",
    )
    genai = f"gen_ai_client_operation_duration_seconds_bucket[{RI}]"
    b.panel(
        timeseries.Panel(),
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
        timeseries.Panel(),
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
        timeseries.Panel(),
        "Records waiting to be written",
        [prom("sum(openai_meter_ledger_pending_records)", "pending")],
        unit="short",
    )
    b.panel(
        timeseries.Panel(),
        "Records written per second",
        [prom(f"sum(rate(openai_meter_ledger_written_records_total[{RI}]))", "written")],
        unit="short",
    )
    b.panel(
        timeseries.Panel(),
        "Records spooled to disk",
        [prom(f"sum(increase(openai_meter_ledger_spooled_records_total[{RI}]))", "spooled")],
        unit="short",
        style=BARS,
        description="The database was unreachable or the queue full: records went to the local "
        "spool and are replayed when the database answers again.",
    )
    b.panel(
        timeseries.Panel(),
        "Ledger write errors",
        [prom(f"sum(increase(openai_meter_ledger_write_errors_total[{RI}]))", "errors")],
        unit="short",
        style=BARS,
    )
    b.panel(
        timeseries.Panel(),
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
        timeseries.Panel(),
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
        style=BARS,
    )
    b.panel(
        table.Panel(),
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
        style=TABLE,
        description="cost_usd is the exact decimal sum from the ledger (shown as text so no digit "
        "is rounded away).",
    )
    b.panel(
        table.Panel(),
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
        style=TABLE,
    )
    b.panel(
        table.Panel(),
        "Spend per team and model in range",
        [
            sql(
                "SELECT team, NULLIF(model, '') AS model, NULLIF(service_tier, '') AS service_tier,\n"
                "  SUM(requests) AS requests, SUM(cost_usd)::text AS cost_usd\n"
                f"FROM usage_daily\nWHERE {TEAM_DAY_WHERE}\n"
                "GROUP BY team, model, service_tier\nORDER BY SUM(cost_usd) DESC, team, model"
            )
        ],
        style=TABLE,
    )
    b.panel(
        table.Panel(),
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
        style=TABLE,
        description="cost NULL = the call could not be priced (see unpriced_reason).",
    )
    return b


def reconcile_panels(b: Board) -> None:
    """Does it match the bill? (issue 13: set by the server's ``reconcile.interval`` runs.) Every
    query here is evaluated against the live Prometheus by tests/dashboards/."""
    b.panel(
        bargauge.Panel(),
        "Captured vs OpenAI's bill (per project)",
        [prom("openai_meter_reconcile_captured_ratio", "{{project}}", instant=True)],
        w=24,
        h=6,
        unit="percentunit",
        style=BUDGET_BARS,
        description="Ledger cost / OpenAI's billed USD (Admin API Costs) per project over the "
        "latest reconciliation's days; below 98% means spend went around the proxy or unpriced "
        "(openai-meter reconcile names the causes).",
    )


def savings_panels(b: Board) -> None:
    """Savings already made (issue 14: ``savings_usd_total{model,team,kind}``: cached input vs the
    full input price, batch / flex vs standard). Every query here is evaluated against the live
    Prometheus by tests/dashboards/."""
    savings = f"openai_meter_savings_usd_total{{{TM}}}"
    b.panel(
        stat.Panel(),
        "Savings in range",
        [prom(f"sum(increase({savings}[$__range]))", "savings", instant=True)],
        w=6,
        h=6,
        unit="currencyUSD",
        decimals=4,
        style=STAT,
        description="What caching, batch and flex saved against the standard price (the "
        "reports' --savings arithmetic, per finished call).",
    )
    b.panel(
        timeseries.Panel(),
        "Savings rate by kind (USD/hour)",
        [prom(f"sum by (kind) (rate({savings}[{RI}])) * 3600", "{{kind}}")],
        w=18,
        h=6,
        unit="currencyUSD",
        style=STACKED,
    )


BOARDS: dict[str, Callable[[], Board]] = {
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
