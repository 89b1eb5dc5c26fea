"""The mission's seed policies, loaded unmodified, on the kernel the tests run on.

Each hook attaches with the method that follows from the probed features
(kernel_expect): on a kernel without kprobes, fentry or BPF-LSM (this project's
CI host) block-cryptominers and detect-privilege-escalation go through
raw_tp/sched_process_exec, detect-container-escape through raw_tp/sys_enter and
monitor-sensitive-files through the open family's sys_exit; on Debian's 6.1 or
6.12 they use BPF-LSM / kprobes.  The enforcement checked is the same everywhere.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from agent_harness import RunningAgent
from kernel_expect import exec_kill_method, features, syscall_method

pytestmark = pytest.mark.kernel

SEEDS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance" / "seed-policies"
# a program that proves it ran: it creates the file named by its argument
MARKER_PROG = "/usr/bin/touch"


def seed(name: str) -> str:
    path = SEEDS / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"seed policy {path} not found (shared/ is laid beside the checkout)")
    return str(path)


def kprobe_events(agent, policy: str) -> list[dict]:
    return [e["process_kprobe"] for e in agent.events()
            if "process_kprobe" in e and e["process_kprobe"]["policy_name"] == policy]


@pytest.fixture
def miner_agent(tmp_path):
    agent = RunningAgent(tmp_path, "--policy", seed("block-cryptominers"),
                         "--policy", seed("monitor-sensitive-files"))
    yield agent
    agent.stop()


@pytest.fixture
def xmrig():
    path = pathlib.Path("/tmp/xmrig")
    shutil.copy2(MARKER_PROG, path)
    yield path
    path.unlink(missing_ok=True)


def test_xmrig_is_killed_before_it_runs_and_others_run(miner_agent, xmrig, tmp_path):
    marker = tmp_path / "mined"
    rc = subprocess.run([str(xmrig), str(marker)]).returncode
    assert rc == -9, "xmrig was not killed"
    assert not marker.exists(), "xmrig ran an instruction: the marker exists"

    other = tmp_path / "not-a-miner"
    shutil.copy2(MARKER_PROG, other)
    assert subprocess.run([str(other), str(tmp_path / "ok")]).returncode == 0
    assert (tmp_path / "ok").exists()

    (ev,) = miner_agent.wait_events(lambda e: "process_kprobe" in e, 1)
    k = ev["process_kprobe"]
    assert k["policy_name"] == "block-cryptominers"
    assert k["action"] == "KPROBE_ACTION_SIGKILL"
    assert k["function_name"] == "security_bprm_check"
    assert k["args"] == [{"linux_binprm_arg": {"path": "/tmp/xmrig"}}]


def test_relative_path_and_symlink_cannot_dodge(miner_agent, xmrig, tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to(xmrig)
    marker = tmp_path / "m"
    assert subprocess.run(["./xmrig", str(marker)], cwd="/tmp").returncode == -9
    assert subprocess.run([str(link), str(marker)]).returncode == -9
    assert not marker.exists()
    miner_agent.wait_events(lambda e: "process_kprobe" in e, 2)


def test_each_hook_attaches_as_the_kernel_allows(miner_agent, xmrig, tmp_path):
    """Every seed hook attaches on every kernel (the file policy through the
    open family's sys_exit where nothing can hook security_file_open)."""
    log = miner_agent.log_text()
    assert f"policy block-cryptominers: kprobe security_bprm_check: {exec_kill_method()}" in log, log
    assert "not active" not in log, log
    open("/etc/shadow", "rb").close()
    ev = miner_agent.wait_events(lambda e: e.get("process_kprobe", {}).get("policy_name")
                                 == "monitor-sensitive-files", 1)[0]["process_kprobe"]
    assert ev["function_name"] == "security_file_open"
    assert ev["args"][0]["file_arg"]["path"] == "/etc/shadow"
    # the exec policy enforces beside it
    assert subprocess.run([str(xmrig), str(tmp_path / "x")]).returncode == -9


# os.setns is Python 3.12+: call libc's
SETNS_CHILD = ("import ctypes,os,sys; fd=os.open('/proc/self/ns/net', os.O_RDONLY); "
               "ctypes.CDLL(None).setns(fd, 0); print('setns done', flush=True)")


def test_container_escape_setns_from_new_pid_namespace_is_killed(tmp_path):
    agent = RunningAgent(tmp_path, "--policy", seed("detect-container-escape"))
    try:
        assert f"__x64_sys_setns (syscall): {syscall_method('setns')}" in agent.log_text(), agent.log_text()
        inside = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c",
                                 SETNS_CHILD + "; sys.exit(0)"], capture_output=True, text=True)
        assert "setns done" not in inside.stdout, "setns in a child pid namespace went through"
        host = subprocess.run([sys.executable, "-c", SETNS_CHILD], capture_output=True, text=True)
        assert host.returncode == 0 and "setns done" in host.stdout
        (ev,) = agent.wait_events(lambda e: "process_kprobe" in e, 1)
        k = ev["process_kprobe"]
        assert k["action"] == "KPROBE_ACTION_SIGKILL" and k["policy_name"] == "detect-container-escape"
        assert not k["process"]["ns"]["pid"].get("is_host", False)
    finally:
        agent.stop()
    assert len(kprobe_events(agent, "detect-container-escape")) == 1


def test_privilege_escalation_in_pid_namespace_is_posted_host_is_not(tmp_path):
    passwd = shutil.which("passwd")
    if passwd is None:
        pytest.skip("passwd is not installed")
    agent = RunningAgent(tmp_path, "--policy", seed("detect-privilege-escalation"))
    try:
        subprocess.run([passwd, "--help"], capture_output=True)
        subprocess.run(["unshare", "--pid", "--fork", passwd, "--help"], capture_output=True)
        (ev,) = agent.wait_events(lambda e: "process_kprobe" in e, 1)
    finally:
        agent.stop()
    k = ev["process_kprobe"]
    assert k["action"] == "KPROBE_ACTION_POST"
    assert k["args"][0]["linux_binprm_arg"]["path"] == os.path.realpath(passwd)
    assert not k["process"]["ns"]["pid"].get("is_host", False)
    assert len(kprobe_events(agent, "detect-privilege-escalation")) == 1
