"""The shipped Prometheus alert rules: promtool check/test, and only served metric names.

promtool is Debian's `prometheus` package (scripts/install-deps.sh installs it);
the tests skip without it only outside CI.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

from served_metrics import PROMETHEUS_SERIES, metric_names, served_names

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "packaging" / "prometheus" / "tetrahost-rules.yml"
RULE_TESTS = pathlib.Path(__file__).parent / "prometheus" / "tetrahost-rules.test.yml"


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not installed in CI (scripts/install-deps.sh installs prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def alerts() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules(promtool):
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout


def test_promtool_unit_tests(promtool):
    r = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_tested_firing_and_not_firing():
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for name in alerts():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no test where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no test where it stays quiet"


def test_rules_read_only_served_metrics():
    served = served_names() | PROMETHEUS_SERIES
    for name, rule in alerts().items():
        used = metric_names(rule["expr"])
        assert used, f"{name}: no metric found in {rule['expr']!r}"
        assert used <= served, f"{name}: not served: {sorted(used - served)}"


def test_metric_name_extraction():
    expr = ('sum by (job, instance) (rate(tetragon_events_total{type="X"}[5m])) > 3 * '
            'x_total offset 5m unless on(instance) up == 0 and label_values(y{a="b"}, z)')
    assert metric_names(expr) == {"tetragon_events_total", "x_total", "up", "y"}
