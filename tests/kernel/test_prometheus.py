"""The shipped alert rules evaluated by a real Prometheus scraping a real agent.

Debian's `prometheus` is started by the test on 127.0.0.1 (a free port, a
private configuration and storage directory), scrapes an agent started by the
test every second and evaluates packaging/prometheus/tetrahost-rules.yml with
every duration divided by 60 (minutes become seconds: `rate(...[5m])` is read
over 5 s, `for: 10m` waits 10 s), so that a scenario of a minute shows what a
fleet's Prometheus shows in an hour.  Alerts are read from /api/v1/alerts.

Scenario, in order, on one agent: a miner is killed by a policy -> TetragonSigkill;
an exec flood several times the quiet rate -> TetragonEventsSpike; the agent
stopped (SIGSTOP) with a 64 KiB ring buffer (large enough to keep up with the
flood, small enough to fill while the agent is stopped) while processes with 4 KiB
of arguments run in a directory 3.6 KiB deep (8 records fill it: a stop is shorter
than a scrape's timeout even in an emulated guest), so the kernel drops records -> TetragonMissedEvents (as test_metrics.py forces it);
after the agent's learning period (10 min, scaled to 10 s like the rules), a
handful of never-run binaries -> TetrahostNewBinaries; the agent frozen
(SIGSTOP) until scrapes fail -> TetrahostAgentDown; a policy whose hook no
kernel has -> TetrahostPolicyNotEnforcing; an Elasticsearch exporter aimed at a
closed port with room for one event -> TetrahostExportErrors and
TetrahostExportLoss.  Every rule of the file fires from real agent metrics.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from agent_harness import REPO, SLOWDOWN, RunningAgent, policy_text

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

RULES = REPO / "packaging" / "prometheus" / "tetrahost-rules.yml"
PROMETHEUS = shutil.which("prometheus")
TAG = uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def minutes_as_seconds(rules: str) -> str:
    """The rules with every PromQL range, offset and `for:` duration divided by 60."""
    def scale(m):
        n, unit = int(m.group(1)), m.group(2)
        return f"{n * {'s': 1, 'm': 60, 'h': 3600}[unit] // 60 or 1}s"
    out = re.sub(r"(?<=\[)(\d+)([smh])(?=\])", scale, rules)
    out = re.sub(r"(?<=offset )(\d+)([smh])\b", scale, out)
    return re.sub(r"(?<=for: )(\d+)([smh])\b", scale, out)


def test_minutes_as_seconds():
    assert minutes_as_seconds("rate(x[5m]) > rate(x[1h] offset 5m)\n  for: 10m\n") == \
        "rate(x[5s]) > rate(x[60s] offset 5s)\n  for: 10s\n"


class Prometheus:
    def __init__(self, tmp: pathlib.Path, target_port: int):
        if PROMETHEUS is None:
            if os.environ.get("CI"):
                pytest.fail("prometheus not installed in CI (scripts/install-deps.sh)")
            pytest.skip("Debian package prometheus not installed")
        self.port = free_port()
        (tmp / "rules.yml").write_text(minutes_as_seconds(RULES.read_text()))
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: [{tmp / 'rules.yml'}]\n"
            "scrape_configs:\n  - job_name: tetrahost\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        self.log = open(tmp / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=self.log, cwd=tmp)
        self.wait(lambda: self.get("/-/ready") is not None, 30, "prometheus to be ready")
        self.wait(lambda: self.target_up(), 30, "the agent's target to be up")
        self.started = time.monotonic()

    def get(self, path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body = r.read()
        except OSError:
            return None
        return json.loads(body) if path.startswith("/api/") else body

    def target_up(self) -> bool:
        r = self.get("/api/v1/query?query=up")
        return bool(r and any(s["value"][1] == "1" for s in r["data"]["result"]))

    def alerts(self, state: str = "firing") -> dict[str, list[dict]]:
        """alertname -> label sets of the alerts in that state."""
        out: dict[str, list[dict]] = {}
        for a in self.get("/api/v1/alerts")["data"]["alerts"]:
            if a["state"] == state:
                out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
        return out

    def wait(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout * SLOWDOWN
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_text()}")
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; alerts now: "
                             f"{self.get('/api/v1/alerts')}\n{self.log_text()[-3000:]}")

    def wait_alert(self, name: str, timeout: float = 60) -> list[dict]:
        self.wait(lambda: name in self.alerts(), timeout, f"alert {name} to fire")
        return self.alerts()[name]

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def miner_dir(tmp_path_factory):
    return tmp_path_factory.mktemp(f"th-prom-{TAG}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, miner_dir):
    metrics_port = free_port()
    policy = tmp_path_factory.mktemp("policy") / "miner.yaml"
    policy.write_text(policy_text(f"th-prom-miner-{TAG}", f"""
  kprobes:
  - call: "security_bprm_check"
    syscall: false
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchBinaries:
      - operator: "In"
        values:
        - "{miner_dir / 'xmrig'}"
      matchActions:
      - action: Sigkill
"""))
    # A hook no kernel has: the policy loads and stays in state error.
    broken = policy.parent / "broken.yaml"
    broken.write_text(policy_text(f"th-prom-broken-{TAG}", """
  kprobes:
  - call: "tetrahost_no_such_function"
    syscall: false
"""))
    # Elasticsearch at a port nothing listens on, with room for one event:
    # every request fails (export errors) and the buffer overflows (loss).
    agent = RunningAgent(tmp_path_factory.mktemp("agent"), "--metrics-address", f"127.0.0.1:{metrics_port}",
                         "--no-journald", "--ringbuf-size", str(64 * 1024), "--policy", str(policy),
                         "--policy", str(broken), metrics_config="new_binary_learning_seconds = 10",
                         config=f"[export.elasticsearch]\nenabled = true\nurl = \"http://127.0.0.1:{free_port()}\"\n"
                                "buffer_size = 1\nflush_interval = 0.2\nmax_retry_delay = 0.5\ntimeout = 1\n")
    agent.metrics_port = metrics_port
    prom = None
    try:
        prom = Prometheus(tmp_path_factory.mktemp("prometheus"), metrics_port)
        yield agent, prom
    finally:
        if prom is not None:
            prom.stop()
        assert agent.stop() == 0, agent.log_text()


def exec_loop(n: int, arg: str = "", cwd: pathlib.Path | None = None) -> None:
    """n executions of /bin/true, each with arg as its argument when given, in cwd."""
    subprocess.run(["sh", "-c", f'i=0; while [ $i -lt {n} ]; do /bin/true {"$ARG" if arg else ""}; i=$((i+1)); done'],
                   check=True, env={**os.environ, "ARG": arg}, cwd=cwd)


def agent_metric(agent, name: str) -> list[str]:
    """The agent's own samples of one metric family, scraped directly (for failure messages)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=10 * SLOWDOWN) as r:
            text = r.read().decode()
    except OSError as exc:
        return [f"scrape failed: {exc}"]
    return [line for line in text.splitlines() if line.startswith(name)]


def test_killed_miner_fires_sigkill_alert(setup, miner_dir):
    agent, prom = setup
    assert "TetragonSigkill" not in prom.alerts() and "TetragonSigkill" not in prom.alerts("pending")
    miner = miner_dir / "xmrig"
    shutil.copy2("/usr/bin/true", miner)
    assert subprocess.run([str(miner)]).returncode == -signal.SIGKILL
    fired = prom.wait_alert("TetragonSigkill")
    assert {(a["policy"], a["hook"], a["severity"]) for a in fired} == \
        {(f"th-prom-miner-{TAG}", "security_bprm_check", "critical")}


def test_exec_flood_fires_spike_alert(setup):
    agent, prom = setup
    # The baseline: the rules compare 5 s against the 60 s before them.
    time.sleep(max(0.0, prom.started + 66 - time.monotonic()))
    assert "TetragonEventsSpike" not in prom.alerts() and "TetragonEventsSpike" not in prom.alerts("pending"), \
        "the host was not quiet enough for a baseline"
    deadline = time.monotonic() + 60 * SLOWDOWN
    while "TetragonEventsSpike" not in prom.alerts():
        assert time.monotonic() < deadline, f"no spike alert; pending: {prom.alerts('pending')}"
        exec_loop(300)
    assert [a["severity"] for a in prom.alerts()["TetragonEventsSpike"]] == ["warning"]


def test_forced_ring_buffer_loss_fires_missed_events_alert(setup, miner_dir):
    agent, prom = setup
    deep = miner_dir.joinpath(*["d" * 200] * 18)          # an exec record carries its cwd, up to 4 KiB
    deep.mkdir(parents=True)
    deadline = time.monotonic() + 60 * SLOWDOWN
    # for: 10 s over 5 s windows: losses in every window, so stop the agent
    # again and again until Prometheus has seen losses for long enough.
    while "TetragonMissedEvents" not in prom.alerts():
        assert time.monotonic() < deadline, \
            f"no missed-events alert; pending: {prom.alerts('pending')}; the agent serves " \
            f"{agent_metric(agent, 'tetragon_missed_events')}; Prometheus has " \
            f"{prom.get('/api/v1/query?query=tetragon_missed_events_total[10s]')}"
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            # each exec record carries its 4 KiB of argv and 3.6 KiB of cwd: 8 fill 64 KiB,
            # 12 are 1.5 rings' worth.  Brief (under a second even in an emulated guest at
            # ~40 ms an exec), so scrapes meanwhile are only delayed, not failed: the rule's
            # 5 s windows each see the counter rise between scrapes
            exec_loop(12, "x" * 4000, deep)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        time.sleep(1)
    assert {a["instance"] for a in prom.alerts()["TetragonMissedEvents"]} == {f"127.0.0.1:{agent.metrics_port}"}
    assert "ring buffer full" in agent.log_text()


def test_never_run_binaries_fire_new_binaries_alert(setup, miner_dir):
    agent, prom = setup
    prom.wait(lambda: time.monotonic() > prom.started + 15, 30, "the learning period to end")
    assert "TetrahostNewBinaries" not in prom.alerts(), "the host ran new binaries before the test did"
    for i in range(8):      # the rule: more than 5 in (scaled) 15 minutes
        fresh = miner_dir / f"fresh-{TAG}-{i}"
        shutil.copy2("/usr/bin/true", fresh)
        subprocess.run([str(fresh)], check=True)
    try:
        fired = prom.wait_alert("TetrahostNewBinaries")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe agent serves: {agent_metric(agent, 'tetrahost_new_binaries')}; "
                             f"Prometheus has: {prom.get('/api/v1/query?query=tetrahost_new_binaries_total')}; "
                             f"up: {prom.get('/api/v1/query?query=up')}") from None
    assert {(a["instance"], a["severity"]) for a in fired} == {(f"127.0.0.1:{agent.metrics_port}", "warning")}


def test_frozen_agent_fires_agent_down_alert(setup):
    agent, prom = setup
    assert "TetrahostAgentDown" not in prom.alerts()
    os.kill(agent.proc.pid, signal.SIGSTOP)     # scrapes time out: up == 0
    try:
        fired = prom.wait_alert("TetrahostAgentDown")
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    assert [a["instance"] for a in fired] == [f"127.0.0.1:{agent.metrics_port}"]
    prom.wait(lambda: "TetrahostAgentDown" not in prom.alerts(), 30, "the alert to resolve once scraped again")


def test_policy_in_error_fires_not_enforcing_alert(setup):
    agent, prom = setup
    fired = prom.wait_alert("TetrahostPolicyNotEnforcing")
    assert {(a["policy"], a["state"]) for a in fired} == {(f"th-prom-broken-{TAG}", "error")}


def test_unreachable_elasticsearch_fires_export_alerts(setup):
    agent, prom = setup
    exec_loop(20)       # events for the exporter to fail on and to drop
    errors = prom.wait_alert("TetrahostExportErrors")
    assert {a["exporter"] for a in errors} == {"elasticsearch"}
    exec_loop(20)
    loss = prom.wait_alert("TetrahostExportLoss")
    assert {a["exporter"] for a in loss} == {"elasticsearch"}
