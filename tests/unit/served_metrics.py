"""What the agent serves on /metrics, and the metric names a PromQL expression reads.

Shared by the alert-rule and dashboard tests: both must only use series the
collectors really yield, so a renamed family fails here, not silently on a
fleet's dashboards.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

# PromQL words that look like metric names; functions are excluded by the "(" after them.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "and", "or",
            "unless", "bool", "inf", "nan"}
# Series Prometheus itself makes for each target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def served_names() -> set[str]:
    """Sample names of every family the agent's collectors yield (counters as NAME_total)."""
    from fake_snapshot import board
    from tetrahost.export.sinks import SinkStats
    from tetrahost.metrics import AgentCollector, ServerCollector
    from tetrahost.metrics_binaries import BinaryExecCounter

    stats = SinkStats()
    stats.lose(1, "ENOSPC")
    exporter = SimpleNamespace(name="file", stats=stats)
    collectors = [AgentCollector(board(), exporters=[exporter]),
                  ServerCollector(SimpleNamespace(stats={"served": 1})), BinaryExecCounter()]
    names = set()
    for collector in collectors:
        for fam in collector.collect():
            names.add(fam.name + "_total" if fam.type == "counter" else fam.name)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label matchers, strings, grouping lists and
    durations removed; identifiers followed by "(" are functions or aggregations)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\blabel_values\((.*),\s*\w+\s*\)", r"label_values(\1)", s)   # Grafana: (series, label)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\boffset\s+\w+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names
