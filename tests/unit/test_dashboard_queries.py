"""Every PromQL query in the Grafana dashboard and the alert rules names a metric the code exports.

The exported names come from the real metrics objects of every service (controller, rollout worker, learner,
simulator replica), built in-process; their registries say which series each family exposes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from controller.reports.metrics import ControllerMetrics
from learner.metrics import LearnerMetrics
from rollout.metrics import RolloutMetrics
from simulator.metrics import SimulatorMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mtr.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# Series Prometheus makes itself for every target; no code of ours exports them.
PROMETHEUS_SERIES = {"up"}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
# The series each kind of family exposes, after its name (prometheus_client drops `_total` from counter names).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or durations."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables: $__rate_interval, ${run}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = re.sub(r"\boffset\s+\w+", "", text)
    words = re.findall(r"(?<![\w.])([a-zA-Z_][\w:]*)\b(?!\s*\()", text)  # a word before "(" is a function
    return {w for w in words if w not in _KEYWORDS}


def exported_series() -> set[str]:
    registries = [
        ControllerMetrics().registry,
        RolloutMetrics("rollout-0").registry,
        LearnerMetrics().registry,
        SimulatorMetrics().registry,
    ]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every panel query, rows' nested panels included."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(dashboard["panels"])
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def alert_queries() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def variable_metrics() -> list[tuple[str, str]]:
    """(variable, metric) of every `label_values(metric, label)` template variable."""
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    found = []
    for variable in variables:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        found += [(variable["name"], m) for m in re.findall(r"label_values\(\s*([a-zA-Z_][\w:]*)", text)]
    return found


def test_the_extractor_finds_metrics_and_skips_functions_labels_and_durations():
    expr = (
        'histogram_quantile(0.99, sum by (le, tool) (rate(mtr_a_bucket{run=~"$run", status!="ok"}[$__rate_interval])))'
        " / ignoring(tool) group_left max(mtr_b offset 15m) * 1e3 > bool 0.5"
        ' and on () (sum(increase(up{job="mtr"}[15m])) or vector(0))'
    )
    assert metric_names(expr) == {"mtr_a_bucket", "mtr_b", "up"}


def test_the_exported_names_include_each_series_of_a_family():
    series = exported_series()
    assert {"mtr_rollout_tokens_total", "mtr_learner_step_seconds_bucket", "mtr_reward"} <= series
    assert "mtr_rollout_tokens" not in series  # a counter is only exposed with `_total`
    assert not any("_total_total" in name for name in series)
    assert all(name.startswith("mtr_") for name in series)


def test_there_are_queries_to_check():
    titles = {title for title, _ in dashboard_queries()}
    assert {"Rollout tokens/s", "Simulator call latency", "Reward by component", "Policy staleness"} <= titles
    alerts = {name for name, _ in alert_queries()}
    assert alerts >= {"MTRRunStalled", "MTRSimulatorErrorRate", "MTRSimulatorReplicaDown"}


@pytest.mark.parametrize(
    ("where", "expr"),
    [pytest.param(t, e, id=f"dashboard:{t}:{i}") for i, (t, e) in enumerate(dashboard_queries())]
    + [pytest.param(a, e, id=f"alert:{a}") for a, e in alert_queries()],
)
def test_every_query_names_only_exported_metrics(where, expr):
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - exported_series() - PROMETHEUS_SERIES
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by any service (query: {expr})"


def test_template_variables_read_exported_metrics():
    found = variable_metrics()
    assert found, "the dashboard has no label_values variable"
    for variable, metric in found:
        assert metric in exported_series(), f"dashboard variable ${variable} reads {metric}, which nothing exports"
