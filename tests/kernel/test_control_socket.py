"""The control socket: permissions, status, live getevents with each filter, slow clients."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest

from agent_harness import SLOWDOWN
from kernel_expect import exec_kill_method
from launch_agent import launched_agent
from tetrahost.control.client import ControlClient

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]
REPO = pathlib.Path(__file__).resolve().parents[2]
SEED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance" / "seed-policies"
CG = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("control")
    uid = uuid.uuid4().hex[:8]
    pdir = tmp / "policies.d"
    pdir.mkdir()
    miner = pathlib.Path(f"/tmp/{uid}-miner")
    shutil.copy2("/usr/bin/true", miner)
    text = (SEED / "block-cryptominers.yaml").read_text().replace('"/tmp/xmrig"', f'"{miner}"')
    (pdir / "miner.yaml").write_text(text)
    # a directory every user may traverse: the socket's own mode must be what refuses them
    sockdir = pathlib.Path(f"/run/tetrahost-test-{uid}")
    a = launched_agent(tmp, "--policy-dir", str(pdir), "--socket", str(sockdir / "c.sock"),
                       "--queue-bytes", "65536")
    a.sock, a.uid, a.miner, a.tmp = str(sockdir / "c.sock"), uid, miner, tmp
    yield a
    a.stop()
    miner.unlink(missing_ok=True)
    shutil.rmtree(sockdir, ignore_errors=True)


def test_socket_is_root_only(agent):
    st = os.stat(agent.sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1])\n"
            "except PermissionError:\n print('refused')\nelse:\n print('connected')")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
                          agent.sock], capture_output=True, text=True)
    assert out.stdout.strip() == "refused", out.stderr


def test_peer_credentials_are_checked_even_if_the_mode_is_loosened(agent):
    os.chmod(agent.sock, 0o666)
    try:
        code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
                "print(s.recv(4096).decode())")
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                              code, agent.sock], capture_output=True, text=True)
        assert out.stdout, out.stderr
        reply = json.loads(out.stdout)
        assert reply["ok"] is False and "root only" in reply["error"]
    finally:
        os.chmod(agent.sock, 0o600)


def test_status_and_protocol_errors(agent):
    with ControlClient(agent.sock) as c:
        st = c.call("status")["status"]
        assert st["health"] == "ok" and st["uptime_seconds"] > 0
        assert st["kernel"]["features"]["send_signal"] is True
        # the method that follows from the probed features (kernel_expect), by its name
        assert any(exec_kill_method() in u for u in st["kernel"]["in_use"]), st["kernel"]["in_use"]
        assert st["policies"][0]["name"] == "block-cryptominers" and st["policies"][0]["state"] == "enforcing"
        assert st["counters"]["records"] > 0
        c.sock.sendall(b'{"version":2,"op":"status"}\n')
        assert "unsupported protocol version" in c._readline()["error"]
        c.sock.sendall(b"nonsense\n")
        assert "not JSON" in c._readline()["error"]
    out = subprocess.run([sys.executable, "-m", "tetrahost.cli.tetra", "status", "--socket", agent.sock],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "health: ok" in out.stdout and "block-cryptominers: enforcing" in out.stdout


class Stream:
    """`tetra getevents -o json <filters>` as a real subprocess, collecting its lines."""

    def __init__(self, agent, *filters):
        self.proc = subprocess.Popen([sys.executable, "-m", "tetrahost.cli.tetra", "getevents", "-o", "json",
                                      "--socket", agent.sock, *filters], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=REPO)
        self.events: list[dict] = []
        self.t = threading.Thread(target=lambda: [self.events.append(json.loads(l)) for l in self.proc.stdout])
        self.t.start()

    def binaries(self, kind=None) -> set[str]:
        return {ev[k]["process"]["binary"] for ev in self.events for k in ev if k.startswith("process_")
                and (kind is None or k == kind)}

    def killed(self) -> set[str]:
        """The paths of the execs its hook events are about (linux_binprm): the
        process of such an event is the one calling execve, which is still the
        old binary where the kernel kills at the exec check (BPF-LSM, fmod_ret,
        kprobe) and the new one where it kills just after (sched_process_exec)."""
        return {a["linux_binprm_arg"]["path"] for ev in self.events for k in ev if k == "process_kprobe"
                for a in ev[k].get("args", []) if "linux_binprm_arg" in a}

    def kinds(self) -> set[str]:
        return {k for ev in self.events for k in ev if k.startswith("process_")}

    def stop(self):
        self.proc.send_signal(2)           # Ctrl-C
        self.proc.wait(10)
        self.t.join()
        return self.proc.returncode, self.proc.stderr.read()


def wait_streams(agent, count: int) -> None:
    deadline = time.monotonic() + 20 * SLOWDOWN
    while True:
        with ControlClient(agent.sock) as c:
            if c.call("status")["status"]["control"]["streams"] >= count:
                return
        assert time.monotonic() < deadline, "streams did not subscribe"
        time.sleep(0.05)


def wait_until(cond, missing) -> None:
    deadline = time.monotonic() + 20 * SLOWDOWN
    while not cond():
        assert time.monotonic() < deadline, f"streams never got {missing()}"
        time.sleep(0.05)


def _cgroup_run(path: str, binary: str):
    subprocess.run(["sh", "-c", f'echo $$ > {path}/cgroup.procs && exec {binary}'], check=False)


def _rm_cgroups(*paths):
    for path in paths:
        for d in (path, os.path.dirname(path)):
            try:
                os.rmdir(d)
            except OSError:
                pass


def test_each_filter_includes_and_excludes(agent):
    u = agent.uid
    a, b = pathlib.Path(f"/tmp/{u}-a"), pathlib.Path(f"/tmp/{u}-b")
    for p in (a, b):
        shutil.copy2("/usr/bin/true", p)
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    # created up front: the agent resolves cgroup ids to paths after the fact,
    # so the directories must outlive the processes' events
    unit_cg, docker_cg = f"{CG}/th{u}.slice/th-{u}.service", f"{CG}/docker/{cid}"
    for d in (unit_cg, docker_cg):
        os.makedirs(d)
    # a process whose pid we know before it execs b
    waiter = subprocess.Popen(["sh", "-c", f"read x; exec {b}"], stdin=subprocess.PIPE, text=True)
    streams = {
        "all": Stream(agent),
        "process_only": Stream(agent, "--process-only"),
        "kprobe": Stream(agent, "-e", "PROCESS_KPROBE"),
        "binary": Stream(agent, "--binary", f"{u}-a$"),
        "pid": Stream(agent, "--pid", str(waiter.pid)),
        "policy": Stream(agent, "--policy-names", "block-cryptominers"),
        "other_policy": Stream(agent, "--policy-names", "no-such-policy"),
        "unit": Stream(agent, "--unit", f"th-{u}*"),
        "container": Stream(agent, "--container", cid[:12]),
        "namespace": Stream(agent, "--namespace", f"th{u}.slice"),
        "docker_ns": Stream(agent, "--namespace", "docker"),
    }
    try:
        wait_streams(agent, len(streams))
        time.sleep(1.1)    # the agent's cgroup-path rescan is rate limited to 1/s: let it see the new dirs
        subprocess.run([str(a)])
        subprocess.run([str(b)])
        assert subprocess.run([str(agent.miner)]).returncode == -9
        waiter.communicate("go\n")
        _cgroup_run(unit_cg, str(a))
        _cgroup_run(docker_cg, str(b))
        # Every stream gets what it must include...
        arrived = {
            "all": lambda s: {str(a), str(b)} <= s.binaries() and str(agent.miner) in s.killed(),
            "process_only": lambda s: s.kinds() >= {"process_exec", "process_exit"} and str(a) in s.binaries(),
            "kprobe": lambda s: "process_kprobe" in s.kinds(),
            "binary": lambda s: str(a) in s.binaries(),
            "pid": lambda s: str(b) in s.binaries(),
            "policy": lambda s: str(agent.miner) in s.killed(),
            "unit": lambda s: str(a) in s.binaries(),
            "namespace": lambda s: str(a) in s.binaries(),
            "container": lambda s: str(b) in s.binaries(),
            "docker_ns": lambda s: str(b) in s.binaries(),
        }
        wait_until(lambda: all(ok(streams[name]) for name, ok in arrived.items()),
                   lambda: {name for name, ok in arrived.items() if not ok(streams[name])})
        # ...and then a later marked exec: once the unfiltered stream has it,
        # the agent has matched every earlier event against every stream's
        # filter (one write_events call serves all streams), so what a
        # stream must exclude would have been sent to it before.
        mark = f"th-filters-done-{u}"
        subprocess.run(["/usr/bin/true", mark])
        wait_until(lambda: any(ev.get("process_exec", {}).get("process", {}).get("arguments") == mark
                               for ev in streams["all"].events), lambda: "the marked exec")
    finally:
        results = {name: s.stop() for name, s in streams.items()}
        _rm_cgroups(unit_cg, docker_cg)
        for p in (a, b):
            p.unlink(missing_ok=True)
    for name, (rc, err) in results.items():
        assert rc in (0, 130) and "Traceback" not in err, (name, err)
    s = streams
    assert {str(a), str(b)} <= s["all"].binaries() and str(agent.miner) in s["all"].killed()
    assert s["process_only"].kinds() == {"process_exec", "process_exit"} and str(a) in s["process_only"].binaries()
    assert s["kprobe"].kinds() == {"process_kprobe"}
    assert s["binary"].binaries() == {str(a)}
    assert s["pid"].binaries() == {str(b)} and {e["process_exec"]["process"]["pid"] for e in s["pid"].events
                                                if "process_exec" in e} == {waiter.pid}
    assert s["policy"].kinds() == {"process_kprobe"} and s["policy"].killed() == {str(agent.miner)}
    assert s["other_policy"].events == []
    assert s["unit"].binaries() == {str(a)}
    assert s["namespace"].binaries() == {str(a)}
    assert s["container"].binaries() == {str(b)}
    assert s["docker_ns"].binaries() == {str(b)}


def test_slow_client_gets_drop_notice_and_does_not_stall_others(agent):
    slow = socket.socket(socket.AF_UNIX)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(agent.sock)
    slow.sendall(b'{"version":1,"op":"getevents","filter":{}}\n')
    fast_bin = pathlib.Path(f"/tmp/{agent.uid}-fast")
    shutil.copy2("/usr/bin/true", fast_bin)
    fast = Stream(agent, "--binary", f"{agent.uid}-fast$")
    try:
        wait_streams(agent, 2)
        t0 = time.monotonic()
        subprocess.run(["sh", "-c", f"for i in $(seq 1500); do /usr/bin/true; case $i in *00) {fast_bin};; esac; done"])
        elapsed = time.monotonic() - t0

        def dropped() -> int:
            with ControlClient(agent.sock) as c:
                return c.call("status")["status"]["control"]["dropped_total"]
        wait_until(lambda: dropped() > 0, lambda: "a drop for the slow client")
        wait_until(lambda: len([e for e in fast.events if "process_exec" in e]) >= 15,
                   lambda: f"the fast client's 15 execs (has {len(fast.events)} events)")
    finally:
        rc, err = fast.stop()
        fast_bin.unlink(missing_ok=True)
    # the slow client's backlog cost the others nothing
    assert len([e for e in fast.events if "process_exec" in e]) == 15 and "dropped" not in err
    data = b""
    slow.settimeout(2)
    try:
        while b'"dropped"' not in data and len(data) < 50 << 20:
            chunk = slow.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        slow.close()
    assert b'"dropped"' in data, elapsed


def test_many_concurrent_clients(agent):
    results = []

    def one():
        with ControlClient(agent.sock) as c:
            results.append(c.call("status")["ok"])
    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 40
