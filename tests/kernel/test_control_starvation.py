"""The agent under a connection flood: 1,100 slow clients on the metrics port, 300 idle
control-socket clients and a getevents client that never reads, while processes run.

Through all of it `tetra status` answers within a second (or, on a machine where status is
slow anyway, within STARVED_FACTOR times its slowest answer with the same processes running and
the same CPUs busy but no flood: an emulated guest), a new Sigkill policy added with
`tetra tracingpolicy add` loads and kills, /metrics can still be scraped, and the agent's
file descriptors and memory stay bounded.  The agent runs with RLIMIT_NOFILE 1024 (systemd's
default soft limit): a thread and a descriptor per metrics connection would exhaust it.
"""
from __future__ import annotations

import http.client
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from agent_harness import SLOWDOWN, RunningAgent
from tetrahost.control import protocol
from tetrahost.control.client import ControlClient
from tetrahost.control.server import MAX_CLIENTS
from tetrahost.metrics_http import MAX_CONNECTIONS

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]
HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
SEED = REPO.parent / "shared" / "conformance" / "seed-policies" / "block-cryptominers.yaml"
AGENT_NOFILE = 1024
METRICS_FLOOD = 1100
IDLE_CONTROL = 300
# Status under the flood may be this many times slower than its slowest answer before
# the flood (same workload, the flood client's CPU taken by a busy loop instead): what
# starvation looks like is waiting for a flood connection's timeout (5-120 s), while
# the flood's own work only shares the agent's CPU (host, 2 cores: 7-16 ms before,
# 24-34 ms under the flood; one core: 224 ms before, 81 ms under it; a 6.1 guest:
# 47 ms before, 314 ms under it).
STARVED_FACTOR = 10
BASELINE_CALLS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def timed_status(path: str) -> tuple[float, dict]:
    t0 = time.monotonic()
    with ControlClient(path, timeout=5 * SLOWDOWN) as c:
        answer = c.call("status")
    return time.monotonic() - t0, answer


def baseline_status(path: str) -> list[float]:
    """Status round trips with the CPUs as busy as the flood client keeps them
    (a busy loop in its place) but nothing aimed at the agent."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        times = []
        for _ in range(BASELINE_CALLS):
            elapsed, answer = timed_status(path)
            assert answer["ok"] is True, answer
            times.append(elapsed)
            time.sleep(0.3)
        return times
    finally:
        burner.kill()
        burner.wait()


def scrape(port: int, attempts: int = 5) -> str:
    """/metrics as a scraper gets it: during a flood a connection may be
    evicted before it is served, and a scraper tries again (Prometheus at its
    next interval); five evictions in a row fail the test."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except (ConnectionError, http.client.HTTPException, urllib.error.URLError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


def tetra(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tetrahost.cli.tetra", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60 * SLOWDOWN)


@pytest.fixture
def agent(tmp_path):
    uid = uuid.uuid4().hex[:8]
    sockdir = pathlib.Path(f"/run/tetrahost-test-{uid}")
    port = free_port()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (AGENT_NOFILE, hard))     # inherited by the agent
    try:
        a = RunningAgent(tmp_path, "--socket", str(sockdir / "c.sock"), "--metrics-address", f"127.0.0.1:{port}",
                         "--policy-dir", str(tmp_path / "policies.d"), "--no-journald")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    a.sock, a.port, a.uid = str(sockdir / "c.sock"), port, uid
    yield a
    rc = a.stop()
    shutil.rmtree(sockdir, ignore_errors=True)
    # shown with a failure: a slow status is a long loop turn or a busy process
    print("\n".join(line for line in a.log_text().splitlines() if "longest loop turn" in line))
    assert rc == 0, a.log_text()[-3000:]


def test_floods_do_not_starve_status_policy_loading_or_metrics(agent, tmp_path, record_testsuite_property):
    pid = agent.proc.pid
    assert "tetrahost_metrics_connections_total" in scrape(agent.port)
    fds0, rss0 = fd_count(pid), rss_bytes(pid)
    # 4 KiB of argv: each exec and exit event is ~5 KiB of JSON, so the deaf stream's
    # 4 MiB queue overflows after a few hundred execs (seconds even in an emulated guest)
    workload = subprocess.Popen(["sh", "-c", 'while :; do /bin/true "$ARG"; done'],
                                env={**os.environ, "ARG": "x" * 4000})
    try:
        before = baseline_status(agent.sock)
    except BaseException:
        workload.kill()
        workload.wait()
        raise
    bound = max(1.0, STARVED_FACTOR * max(before))
    flood = subprocess.Popen([sys.executable, str(HERE / "flood_metrics.py"), str(agent.port), str(METRICS_FLOOD)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    miner = pathlib.Path(f"/tmp/{agent.uid}-miner")
    try:
        assert flood.stdout.readline().strip() == "flooding"
        for i in range(IDLE_CONTROL):            # idle, and every third one mid-frame
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(agent.sock)            # blocking: waits while the agent's backlog is full
            if i % 3 == 0:
                s.sendall(b'{"version":1,"op":"sta')
            held.append(s)
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.connect(agent.sock)
        deaf.sendall(protocol.request("getevents", filter={}))
        held.append(deaf)

        peak_fds, slowest, times, dropped = 0, 0.0, [], 0
        start = time.monotonic()
        # 8 s of status calls, and on until the deaf stream has lost events
        while time.monotonic() < start + 8 * SLOWDOWN or (not dropped and time.monotonic() < start + 60 * SLOWDOWN):
            elapsed, answer = timed_status(agent.sock)
            assert answer["ok"] is True, answer
            dropped = answer["status"]["control"]["dropped_total"]
            slowest = max(slowest, elapsed)
            times.append(round(elapsed, 2))
            peak_fds = max(peak_fds, fd_count(pid))
            time.sleep(0.3)
        control = answer["status"]["control"]
        for key, value in (("status_before_flood_max_s", max(before)), ("status_bound_s", bound),
                           ("status_under_flood_max_s", slowest)):
            record_testsuite_property(key, round(value, 3))    # in junit.xml: the figures of a passing run
        assert slowest < bound, f"status took {slowest:.2f} s under the flood, bound {bound:.2f} s " \
            f"(each call, in order: {times}; before the flood: {[round(t, 2) for t in before]})"
        assert control["evicted"] > 0 and control["clients"] <= MAX_CLIENTS
        assert control["dropped_total"] > 0             # the deaf stream lost events, counted
        # fds: the control clients and metrics connections allowed, nothing per flood connection
        assert peak_fds <= fds0 + MAX_CLIENTS + MAX_CONNECTIONS + 16, (fds0, peak_fds)
        rss_growth = rss_bytes(pid) - rss0
        assert rss_growth < 48 << 20, f"agent RSS grew {rss_growth >> 20} MiB"

        print(f"\nstatus slowest {slowest * 1000:.0f} ms (bound {bound * 1000:.0f} ms; before the flood "
              f"{max(before) * 1000:.0f} ms at most); agent fds {fds0} -> peak {peak_fds}; "
              f"RSS +{rss_growth / (1 << 20):.1f} MiB; control {control}")
        text = scrape(agent.port)
        evicted = [l for l in text.splitlines() if l.startswith('tetrahost_metrics_connections_total{result="evicted"}')]
        assert evicted and float(evicted[0].split()[-1]) >= 100, evicted

        shutil.copy2("/usr/bin/true", miner)
        policy = tmp_path / f"stop-{agent.uid}.yaml"
        policy.write_text(SEED.read_text().replace("name: block-cryptominers", f"name: stop-{agent.uid}")
                          .replace('"/tmp/xmrig"', f'"{miner}"'))
        out = tetra("tracingpolicy", "add", str(policy), "--socket", agent.sock)
        assert out.returncode == 0 and f"stop-{agent.uid}" in out.stdout and "enforcing" in out.stdout, out
        assert subprocess.run([str(miner)]).returncode == -9
        out = tetra("status", "--socket", agent.sock)
        assert out.returncode == 0 and "health: ok" in out.stdout and f"stop-{agent.uid}: enforcing" in out.stdout, out
    finally:
        workload.kill()
        workload.wait()
        for s in held:
            s.close()
        summary, _ = flood.communicate("", timeout=30)
        miner.unlink(missing_ok=True)
    assert "closed_by_server=" in summary and int(summary.split("closed_by_server=")[1]) >= METRICS_FLOOD - MAX_CONNECTIONS


def test_an_oversized_policy_is_refused_with_a_clear_error(agent, tmp_path):
    big = tmp_path / "huge.yaml"
    body = SEED.read_text().replace("name: block-cryptominers", f"name: huge-{agent.uid}")
    big.write_text(body + "".join(f"# padding line {i:08d} " + "x" * 60 + "\n" for i in range(8 << 20 >> 6)))
    assert big.stat().st_size > 8 << 20
    out = tetra("tracingpolicy", "add", str(big), "--socket", agent.sock)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    # refused before it is sent: the policy front end's file size cap, named with the limit
    assert "too large" in out.stderr and "limit" in out.stderr, out.stderr
    # the same frame written by hand: the agent answers with a structured error and closes
    with ControlClient(agent.sock) as c:
        c.sock.sendall(b'{"version":1,"op":"policy_add","filename":"x.yaml","content":"'
                       + b"y" * protocol.MAX_FRAME)
        answer = c._readline()
    assert answer["ok"] is False and answer["code"] == protocol.FRAME_TOO_LARGE and answer["limit"] == protocol.MAX_FRAME
    elapsed, st = timed_status(agent.sock)
    assert st["ok"] and st["status"]["control"]["too_large"] == 1 and elapsed < 1.0
    assert not any(p["name"] == f"huge-{agent.uid}" for p in st["status"]["policies"])
