"""The mission's four seed policies, loaded unmodified by one agent, on the
kernel the tests run on (this machine's, and every guest of tests/vm).

Each hook attaches with the method that follows from the probed features
(kernel_expect): on a kernel without kprobes, fentry or BPF-LSM
block-cryptominers and detect-privilege-escalation go through
raw_tp/sched_process_exec, detect-container-escape through raw_tp/sys_enter and
monitor-sensitive-files through the open family's sys_exit; on Debian's 6.1 or
6.12 they use BPF-LSM / kprobes.  The enforcement checked is the same everywhere.

Under emulation (the guests) an exec costs ~40 ms and an agent start several
seconds: the module shares one agent, and each test reads only the events of
what it ran (new_events).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from agent_harness import REPO, RunningAgent, policy_events
from kernel_expect import exec_kill_method, exec_monitor_method, features, syscall_method

pytestmark = pytest.mark.kernel

SEEDS = REPO.parent / "shared" / "conformance" / "seed-policies"
NAMES = ["block-cryptominers", "detect-privilege-escalation", "detect-container-escape",
         "monitor-sensitive-files"]
# a program that proves it ran: it creates the file named by its argument
MARKER_PROG = "/usr/bin/touch"


def seed(name: str) -> str:
    """The path of seed policy NAME (also used by test_file_open_hooks.py)."""
    path = SEEDS / f"{name}.yaml"
    if not path.is_file():
        pytest.fail(f"seed policy {path} not found (shared/ is laid beside the checkout)")
    return str(path)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    args = []
    for name in NAMES:
        args += ["--policy", seed(name)]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    yield a
    a.stop()


def new_events(agent, policy: str, run, count: int) -> list[dict]:
    """The events of `policy` that `run()` caused: those after the ones already
    there, once at least `count` came and everything before them is written."""
    before = len(policy_events(agent, policy))
    run()
    return policy_events(agent, policy, before + count)[before:]


@pytest.fixture(scope="module")
def xmrig():
    path = pathlib.Path("/tmp/xmrig")
    shutil.copy2(MARKER_PROG, path)
    yield path
    path.unlink(missing_ok=True)


def test_every_seed_hook_is_active_with_the_method_this_kernel_allows(agent):
    log = agent.log_text()
    assert "not active" not in log, log
    assert f"policy block-cryptominers: kprobe security_bprm_check: {exec_kill_method()}" in log, log
    assert f"policy detect-privilege-escalation: kprobe security_bprm_check: {exec_monitor_method()}" in log, log
    assert f"__x64_sys_setns (syscall): {syscall_method('setns')}" in log, log
    f = features()
    file_method = ("kprobe security_file_open" if f.kprobe else "fentry security_file_open" if f.fentry
                   else "raw_tp sys_exit of open")
    assert f"policy monitor-sensitive-files: kprobe security_file_open: {file_method}" in log, log


def test_xmrig_is_killed_before_it_runs_and_others_run(agent, xmrig, tmp_path):
    marker = tmp_path / "mined"
    other = tmp_path / "not-a-miner"
    shutil.copy2(MARKER_PROG, other)
    results = {}

    def run():
        results["xmrig"] = subprocess.run([str(xmrig), str(marker)]).returncode
        results["other"] = subprocess.run([str(other), str(tmp_path / "ok")]).returncode

    (k,) = new_events(agent, "block-cryptominers", run, 1)
    assert results["xmrig"] == -9, "xmrig was not killed"
    assert not marker.exists(), "xmrig ran an instruction: the marker exists"
    assert results["other"] == 0 and (tmp_path / "ok").exists()
    assert k["action"] == "KPROBE_ACTION_SIGKILL"
    assert k["function_name"] == "security_bprm_check"
    assert k["args"] == [{"linux_binprm_arg": {"path": "/tmp/xmrig"}}]


def test_relative_path_and_symlink_cannot_dodge(agent, xmrig, tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to(xmrig)
    marker = tmp_path / "m"
    results = []

    def run():
        results.append(subprocess.run(["./xmrig", str(marker)], cwd="/tmp").returncode)
        results.append(subprocess.run([str(link), str(marker)]).returncode)

    events = new_events(agent, "block-cryptominers", run, 2)
    assert results == [-9, -9]
    assert not marker.exists()
    assert [k["args"] for k in events] == [[{"linux_binprm_arg": {"path": "/tmp/xmrig"}}]] * 2


def test_monitor_sensitive_files_reports_shadow_not_hostname(agent):
    def run():
        with open("/etc/hostname", "rb"):
            pass
        with open("/etc/shadow", "rb"):
            pass

    events = new_events(agent, "monitor-sensitive-files", run, 1)
    mine = [k for k in events if k["process"]["pid"] == os.getpid()]
    assert [k["args"][0]["file_arg"]["path"] for k in mine] == ["/etc/shadow"]
    assert mine[0]["function_name"] == "security_file_open"


# os.setns is Python 3.12+: call libc's
SETNS = ("import ctypes,os; fd=os.open('/proc/self/ns/net', os.O_RDONLY); "
         "ctypes.CDLL(None).setns(fd, 0); print('setns done', flush=True)")


def test_container_escape_setns_killed_in_pid_namespace_only(agent):
    runs = {}

    def run():
        runs["inside"] = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", SETNS],
                                        capture_output=True, text=True)
        runs["host"] = subprocess.run([sys.executable, "-c", SETNS], capture_output=True, text=True)

    (k,) = new_events(agent, "detect-container-escape", run, 1)
    assert "setns done" not in runs["inside"].stdout, "setns in a child pid namespace went through"
    assert runs["host"].returncode == 0 and "setns done" in runs["host"].stdout
    assert k["action"] == "KPROBE_ACTION_SIGKILL"
    assert not k["process"]["ns"]["pid"].get("is_host", False)


def test_privilege_escalation_in_pid_namespace_is_posted_host_is_not(agent):
    passwd = shutil.which("passwd")
    if passwd is None:
        pytest.fail("passwd is not installed: the policy's binaries are su, sudo and passwd")

    def run():
        subprocess.run([passwd, "--help"], capture_output=True)
        subprocess.run(["unshare", "--pid", "--fork", passwd, "--help"], capture_output=True)

    (k,) = new_events(agent, "detect-privilege-escalation", run, 1)
    assert k["action"] == "KPROBE_ACTION_POST"
    assert k["args"][0]["linux_binprm_arg"]["path"] == os.path.realpath(passwd)
    assert not k["process"]["ns"]["pid"].get("is_host", False)
