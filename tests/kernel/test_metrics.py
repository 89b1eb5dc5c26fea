"""Prometheus metrics of the real agent, scraped over HTTP.

The exec counters must follow a known workload; tetragon_missed_events_total
must come from real in-kernel losses: the test stops the agent (SIGSTOP) with
a 4 KiB ring buffer while 300 processes run, so the kernel has to drop records.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_harness import SLOWDOWN, RunningAgent

pytestmark = pytest.mark.kernel

SEEDS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance" / "seed-policies"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsAgent(RunningAgent):
    def __init__(self, tmp_path, *extra):
        self.port = free_port()
        super().__init__(tmp_path, "--metrics-address", f"127.0.0.1:{self.port}", "--no-journald", *extra)

    def scrape(self) -> dict[tuple, float]:
        """{(name, sorted label items): value} of one scrape."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def value(samples, name, default=None, **labels) -> float:
    """The series' value; a missing series fails (a renamed metric or label must
    not pass as a zero) unless a default is given (a reading before any event)."""
    key = (name, tuple(sorted(labels.items())))
    if default is not None and key not in samples:
        return default
    assert key in samples, f"no series {name}{labels} among {sorted({n for n, _ in samples})}"
    return samples[key]


@pytest.fixture
def agent(tmp_path):
    a = MetricsAgent(tmp_path)
    yield a
    assert a.stop() == 0, a.log_text()


def test_exec_counters_follow_a_workload(agent):
    n = 60
    before = agent.scrape()
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"], check=True)
    agent.wait_events(lambda e: "process_exec" in e and e["process_exec"]["process"]["binary"] == "/usr/bin/true", n)
    after = agent.scrape()
    assert value(after, "tetragon_process_exec_total") - value(before, "tetragon_process_exec_total", default=0.0) >= n
    assert (value(after, "tetragon_events_total", type="PROCESS_EXEC")
            - value(before, "tetragon_events_total", default=0.0, type="PROCESS_EXEC")) >= n
    assert value(after, "tetragon_events_total", type="PROCESS_EXIT") >= n
    assert value(after, "tetrahost_ringbuf_records_total") >= 2 * n
    assert value(after, "tetrahost_process_cache_size") > 10
    assert value(after, "tetragon_missed_events_total", type="PROCESS_EXEC") == 0
    exporter = f"file:{agent.events_path}"
    assert value(after, "tetrahost_export_events_total", exporter=exporter) >= 2 * n
    assert value(after, "tetrahost_export_bytes_total", exporter=exporter) > 0
    assert value(after, "tetrahost_export_dropped_total", exporter=exporter) == 0


def test_missed_events_come_from_the_kernel(tmp_path):
    agent = MetricsAgent(tmp_path, "--ringbuf-size", "4096")
    try:
        assert sum(v for (name, _), v in agent.scrape().items() if name == "tetragon_missed_events_total") == 0
        os.kill(agent.proc.pid, signal.SIGSTOP)       # the loop cannot drain the ring buffer
        try:
            subprocess.run(["sh", "-c", "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done"], check=True)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10 * SLOWDOWN
        while True:
            samples = agent.scrape()
            missed = sum(v for (name, _), v in samples.items() if name == "tetragon_missed_events_total")
            if missed > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert missed > 0, "no in-kernel loss reported"
        assert value(samples, "tetrahost_ringbuf_lost_total") == missed
        assert value(samples, "tetragon_missed_events_total", type="PROCESS_EXEC") > 0
        # the same losses under Tetragon's name and labels (MSG_OP_EXECVE = 5, ring buffer full)
        assert value(samples, "tetragon_bpf_missed_events_total", msg_op="5", error="ENOSPC") > 0
        assert sum(v for (name, _), v in samples.items() if name == "tetragon_bpf_missed_events_total") == missed
    finally:
        assert agent.stop() == 0, agent.log_text()
    assert "ring buffer full" in agent.log_text()


def test_policy_metrics(tmp_path):
    policy = SEEDS / "block-cryptominers.yaml"
    if not policy.is_file():
        pytest.skip(f"seed policy {policy} not found")
    xmrig = pathlib.Path("/tmp/xmrig")
    agent = MetricsAgent(tmp_path, "--policy", str(policy))
    try:
        samples = agent.scrape()
        assert value(samples, "tetrahost_policy_state", policy="block-cryptominers", state="enforcing") == 1
        assert value(samples, "tetrahost_policy_state", policy="block-cryptominers", state="error") == 0
        shutil.copy2("/usr/bin/true", xmrig)
        assert subprocess.run([str(xmrig)]).returncode == -9
        agent.wait_events(lambda e: "process_kprobe" in e, 1)
        samples = agent.scrape()
        hits = {labels: v for (name, labels), v in samples.items() if name == "tetragon_policy_events_total"}
        assert any(dict(k)["policy"] == "block-cryptominers" and dict(k)["action"] == "SIGKILL" and v >= 1
                   for k, v in hits.items()), hits
    finally:
        xmrig.unlink(missing_ok=True)
        assert agent.stop() == 0, agent.log_text()


def test_policy_dir_from_run_is_watched(tmp_path):
    """`tetrahost run --policy-dir` starts the directory watch: its policy shows up as enforcing."""
    policy = SEEDS / "block-cryptominers.yaml"
    if not policy.is_file():
        pytest.skip(f"seed policy {policy} not found")
    pdir = tmp_path / "policies.d"
    pdir.mkdir()
    shutil.copy2(policy, pdir / "miners.yaml")
    agent = MetricsAgent(tmp_path, "--policy-dir", str(pdir))
    try:
        samples = agent.scrape()
        assert value(samples, "tetrahost_policy_state", policy="block-cryptominers", state="enforcing") == 1
        assert value(samples, "tetrahost_policy_reloads_total", result="ok") >= 1
    finally:
        assert agent.stop() == 0, agent.log_text()


STATS = pathlib.Path("/proc/sys/kernel/bpf_stats_enabled")


def test_tetragon_dashboard_metrics_and_promtool(tmp_path):
    """Tetragon's names for the same facts, per-program cost while bpf stats
    are on, and a scrape that `promtool check metrics` passes."""
    policy = SEEDS / "block-cryptominers.yaml"
    if not policy.is_file():
        pytest.skip(f"seed policy {policy} not found")
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing (Debian package prometheus, scripts/install-deps.sh)"
    before = STATS.read_text().strip()
    STATS.write_text("1")          # host-wide; put back below
    agent = MetricsAgent(tmp_path, "--policy", str(policy))
    try:
        for _ in range(20):
            subprocess.run(["/bin/true"], check=True)
        deadline = time.monotonic() + 10 * SLOWDOWN
        while True:
            samples = agent.scrape()
            runs = {dict(k)["section"]: v for (name, k), v in samples.items()
                    if name == "tetragon_overhead_program_runs_total" and dict(k)["sensor"] == "process"}
            if sum(runs.values()) >= 20 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(runs.values()) >= 20, runs          # at least our 20 execs ran the exec program
        secs = [v for (name, k), v in samples.items() if name == "tetragon_overhead_program_seconds_total"]
        assert secs and sum(secs) > 0
        assert any(dict(k)["policy"] == "block-cryptominers" for (name, k) in samples
                   if name == "tetragon_overhead_program_runs_total"), "no series for the policy's programs"
        assert value(samples, "tetragon_tracingpolicy_loaded", state="enabled") == 1
        assert value(samples, "tetragon_tracingpolicy_loaded", state="load_error") == 0
        info = [dict(k) for (name, k) in samples if name == "tetragon_build_info"]
        assert len(info) == 1 and info[0]["version"] and info[0]["python_version"]
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=10) as r:
            text = r.read()
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
            (check.stdout + check.stderr).decode()
    finally:
        STATS.write_text(before)
        assert agent.stop() == 0, agent.log_text()
