"""The four seed policies, unmodified, on the guest's kernel (Debian 12's 6.1 or
6.12, with or without BPF-LSM active, PREEMPT_RT): one agent loads all four,
each test drives one; how each hook attaches follows from the probed features.

Under TCG an exec costs ~40 ms and the agent takes seconds to start, so the
agent is shared by the module and each workload is a handful of execs.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from agent_harness import REPO, RunningAgent, policy_events
from kernel_expect import exec_kill_method, syscall_method

SEEDS = REPO.parent / "shared" / "conformance" / "seed-policies"
NAMES = ["block-cryptominers", "detect-privilege-escalation", "detect-container-escape",
         "monitor-sensitive-files"]


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    if not SEEDS.is_dir():
        pytest.skip(f"{SEEDS} not found")
    args = []
    for name in NAMES:
        args += ["--policy", str(SEEDS / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    yield a
    a.stop()


def test_every_seed_hook_is_active_with_the_best_method_here(agent):
    log = agent.log_text()
    assert "not active" not in log, log
    # exec hooks fail the exec where BPF-LSM (or else fmod_ret) is there
    assert f"policy block-cryptominers: kprobe security_bprm_check: {exec_kill_method()}" in log, log
    assert f"__x64_sys_setns (syscall): {syscall_method('setns')}" in log, log
    assert "kprobe security_file_open" in log


def test_block_cryptominers_fails_the_exec_and_kills(agent, tmp_path):
    xmrig = pathlib.Path("/tmp/xmrig")
    shutil.copy2("/usr/bin/touch", xmrig)
    marker = tmp_path / "mined"
    rc = subprocess.run([str(xmrig), str(marker)]).returncode
    assert rc == -9
    assert not marker.exists()
    other = tmp_path / "miner-not"
    shutil.copy2("/usr/bin/touch", other)
    assert subprocess.run([str(other), str(tmp_path / "ok")]).returncode == 0
    (k,) = policy_events(agent, "block-cryptominers", 1)
    assert k["action"] == "KPROBE_ACTION_SIGKILL"
    assert k["args"] == [{"linux_binprm_arg": {"path": "/tmp/xmrig"}}]


def test_privilege_escalation_only_in_a_pid_namespace(agent):
    passwd = shutil.which("passwd") or pytest.skip("passwd not installed")
    subprocess.run([passwd, "--help"], capture_output=True)
    subprocess.run(["unshare", "--pid", "--fork", passwd, "--help"], capture_output=True)
    (k,) = policy_events(agent, "detect-privilege-escalation", 1)
    assert k["action"] == "KPROBE_ACTION_POST"
    assert not k["process"]["ns"]["pid"].get("is_host", False)


# os.setns is Python 3.12+: call libc's
SETNS = ("import ctypes,os; fd=os.open('/proc/self/ns/net', os.O_RDONLY); "
         "ctypes.CDLL(None).setns(fd, 0); print('setns done', flush=True)")


def test_container_escape_setns_killed_in_pid_namespace_only(agent):
    inside = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", SETNS],
                            capture_output=True, text=True)
    assert "setns done" not in inside.stdout
    host = subprocess.run([sys.executable, "-c", SETNS], capture_output=True, text=True)
    assert host.returncode == 0 and "setns done" in host.stdout
    (k,) = policy_events(agent, "detect-container-escape", 1)
    assert k["action"] == "KPROBE_ACTION_SIGKILL"


def test_monitor_sensitive_files_reports_shadow_not_hostname(agent):
    with open("/etc/hostname", "rb"):
        pass
    with open("/etc/shadow", "rb"):
        pass
    paths = [k["args"][0]["file_arg"]["path"] for k in policy_events(agent, "monitor-sensitive-files", 1)]
    assert "/etc/shadow" in paths
    assert "/etc/hostname" not in paths
    assert os.getpid() in [k["process"]["pid"] for k in policy_events(agent, "monitor-sensitive-files")
                           if k["args"][0]["file_arg"]["path"] == "/etc/shadow"]
