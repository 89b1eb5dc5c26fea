"""The shipped Grafana dashboard reads only series the agent serves.

Every PromQL expression in it (panel targets, annotations, template variable
queries) is parsed for metric names, which must be among the families the
collectors yield (or Prometheus's own `up`).
"""
from __future__ import annotations

import json
import pathlib

from served_metrics import PROMETHEUS_SERIES, metric_names, served_names

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "tetrahost-dashboard.json"


def expressions(node, where="$"):
    """(json path, PromQL) of every expr / variable query in the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield f"{where}.{key}", value
            elif key == "query" and isinstance(value, str) and "(" in value:
                yield f"{where}.{key}", value
            else:
                yield from expressions(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from expressions(value, f"{where}[{i}]")


def test_dashboard_reads_only_served_metrics():
    dash = json.loads(DASHBOARD.read_text())
    served = served_names() | PROMETHEUS_SERIES
    found = list(expressions(dash))
    assert len(found) >= len(dash["panels"]) + 2        # every panel, the annotation, the host variable
    used = set()
    for where, expr in found:
        names = metric_names(expr)
        assert names, f"{DASHBOARD.name}: {where}: no metric in {expr!r}"
        assert names <= served, f"{DASHBOARD.name}: {where}: not served: {sorted(names - served)}"
        used |= names
    # the series the alert rules are about all have a panel
    for name in ("tetragon_events_total", "tetragon_policy_events_total", "tetragon_missed_events_total",
                 "tetrahost_new_binaries_total", "tetrahost_policy_state", "tetrahost_export_lost_total", "up"):
        assert name in used, f"no panel for {name}"


def test_panels_have_unique_ids_and_targets():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
