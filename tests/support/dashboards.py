"""The queries inside ``dashboards/`` (Grafana JSON + Prometheus alert rules), ready to evaluate.

Grafana variables are replaced the way Grafana itself expands them, with "everything selected"
values, so the text evaluated by tests is the text a user's Grafana runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
ALERTS_FILE = DASHBOARDS_DIR / "alerts.yml"

_PROM_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "10m",
    "$team": ".*",
    "$model": ".*",
}
_LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_COMPARISON_TAIL = re.compile(r"\s*(?:>|<|>=|<=|==|!=)\s*[0-9.]+\s*$")


@dataclass(frozen=True)
class PromQuery:
    where: str  # "spend.json / Spend in range / A" or "alerts.yml / OpenAIMeterUnpricedCalls"
    expr: str  # as written
    legend: str = ""

    @property
    def evaluable(self) -> str:
        """Variables expanded; an alert's threshold comparison dropped (its left side must have
        series whether or not the alert fires)."""
        text = self.expr
        for name in sorted(_PROM_VARS, key=len, reverse=True):
            text = text.replace(name, _PROM_VARS[name])
        if self.where.startswith("alerts.yml"):
            text = _COMPARISON_TAIL.sub("", text)
        return text

    @property
    def legend_labels(self) -> set[str]:
        return set(_LEGEND_LABEL.findall(self.legend))

    @property
    def grouping_labels(self) -> set[str] | None:
        """Labels of the outermost ``by (...)`` aggregation (``le`` excluded); None when none."""
        clauses = _BY_CLAUSE.findall(self.expr)
        if not clauses or " without" in f" {self.expr}":
            return None
        labels: set[str] = set()
        for clause in clauses:
            labels |= {x.strip() for x in clause.split(",") if x.strip()}
        return labels - {"le"}


@dataclass(frozen=True)
class SqlQuery:
    where: str
    sql: str
    fmt: str

    def evaluable(self, start: str, end: str, teams: Iterable[str]) -> str:
        """``$__timeFrom()`` etc. expanded as Grafana's PostgreSQL data source does."""
        quoted_teams = ",".join("'" + t.replace("'", "''") + "'" for t in teams)
        text = self.sql
        text = re.sub(
            r"\$__timeFilter\(([^)]+)\)",
            lambda m: f"{m.group(1)} BETWEEN '{start}' AND '{end}'",
            text,
        )
        text = text.replace("$__timeFrom()", f"'{start}'").replace("$__timeTo()", f"'{end}'")
        return text.replace("$team", quoted_teams)


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def load_alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query text: Grafana keeps it as a string, or (Prometheus' editor) as
    ``{"query": ..., "refId": ...}``; ``definition`` is the UI's copy when present."""
    query = variable.get("definition") or variable["query"]
    if isinstance(query, Mapping):
        query = query["query"]
    assert isinstance(query, str), variable
    return query


def prom_queries(dashboards: Mapping[str, Mapping[str, Any]] | None = None) -> list[PromQuery]:
    dashboards = load_dashboards() if dashboards is None else dashboards
    out: list[PromQuery] = []
    for name, board in dashboards.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"{name} / {panel['title']} / {target['refId']}"
                    legend = target.get("legendFormat", "")
                    out.append(PromQuery(where, target["expr"], legend))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("datasource", {}).get("type") == "prometheus":
                query = variable_query(variable)
                match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
                assert match, f"{name}: unsupported variable query {query!r}"
                out.append(
                    PromQuery(
                        f"{name} / variable {variable['name']}",
                        f"count by ({match.group(2)}) ({match.group(1)})",
                        "{{" + match.group(2) + "}}",
                    )
                )
    for rule in load_alert_rules():
        out.append(PromQuery(f"alerts.yml / {rule['alert']}", rule["expr"]))
    return out


def sql_queries(dashboards: Mapping[str, Mapping[str, Any]] | None = None) -> list[SqlQuery]:
    dashboards = load_dashboards() if dashboards is None else dashboards
    out: list[SqlQuery] = []
    for name, board in dashboards.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if "rawSql" in target:
                    where = f"{name} / {panel['title']} / {target['refId']}"
                    out.append(SqlQuery(where, target["rawSql"], target.get("format", "table")))
        for variable in board.get("templating", {}).get("list", []):
            if "postgres" in variable.get("datasource", {}).get("type", ""):
                out.append(
                    SqlQuery(f"{name} / variable {variable['name']}", variable_query(variable), "")
                )
    return out


# --- PromQL metric names ---------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
        "unless", "offset", "inf", "nan",
    }
)  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels, strings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range / subquery windows
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if word.lower() in _KEYWORDS:
            continue
        before = text[: match.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):  # 1e3, 0.5s …
            continue
        names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition."""
    names: set[str] = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
