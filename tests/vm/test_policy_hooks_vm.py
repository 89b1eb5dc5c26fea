"""Argument types, Override, Signal and lsmhooks on Debian's 6.1 kernel.

One agent, several small policies, each with its own trigger path, so that
every case proves both what it catches and what it leaves alone.
"""
from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from agent_harness import policy_events, start_with_policies
from kernel_expect import features, not_applicable

BASE = "/tmp/thvm"

POLICIES = {
    # Override at a security_* kprobe: planned as BPF-LSM file_open
    "deny-open": f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/denied"]
      matchActions:
      - action: Override
        argError: -1
""",
    # Override on a syscall needs error injection (fmod_ret or
    # bpf_override_return on syscalls), which Debian's kernel lacks: the hook
    # must be reported inactive with that reason, not attached as a mere kprobe
    "deny-mkdir": f"""
  kprobes:
  - call: sys_mkdirat
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/nomkdir"]
      matchActions:
      - action: Override
        argError: -13
""",
    # the same intent through an LSM hook works there: BPF-LSM path_mkdir
    "deny-mkdir-lsm": f"""
  kprobes:
  - call: security_path_mkdir
    syscall: false
    args:
    - index: 0
      type: path
    - index: 1
      type: dentry
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{BASE}/locked"]
      matchActions:
      - action: Override
        argError: -13
""",
    # path and dentry arguments
    "mkdir-paths": f"""
  kprobes:
  - call: security_path_mkdir
    syscall: false
    args:
    - index: 0
      type: path
    - index: 1
      type: dentry
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{BASE}/parent"]
""",
    # Signal action with argSig, from an lsmhooks section
    "signal-on-open": f"""
  lsmhooks:
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{BASE}/usr1"]
      matchActions:
      - action: Signal
        argSig: 10
""",
    # fd argument resolved to its file in the kernel
    "fd-close": f"""
  kprobes:
  - call: sys_close
    syscall: true
    args:
    - index: 0
      type: fd
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/fd-"]
""",
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    os.makedirs(f"{BASE}/parent", exist_ok=True)
    os.makedirs(f"{BASE}/locked", exist_ok=True)
    for f in ("denied-file", "allowed-file", "usr1", "fd-1"):
        pathlib.Path(f"{BASE}/{f}").write_text("x")
    a = start_with_policies(tmp_path_factory, POLICIES)
    yield a
    a.stop()


def events_of(agent, name, count=1):
    return policy_events(agent, name, count)


LSM_ONLY = ("signal-on-open",)     # an lsmhooks section: BPF-LSM or nothing


def test_all_hooks_active_and_attach_as_planned(agent):
    lines = agent.log_text().splitlines()
    inactive = [line for line in lines if "not active:" in line]
    log = agent.log_text()
    by_policy = {line.split("policy ", 1)[1].split(" ")[0]: line for line in inactive}
    assert "CONFIG_FUNCTION_ERROR_INJECTION" in by_policy.get("deny-mkdir", ""), inactive
    if features().lsm:
        assert set(by_policy) == {"deny-mkdir"}, inactive
        assert "BPF-LSM file_open (Override returns the error)" in log
        assert "BPF-LSM path_mkdir (Override returns the error)" in log
    else:
        # BPF-LSM inactive: Override on security_file_open takes fmod_ret and says
        # so; the lsmhooks policies cannot run and say why
        assert set(by_policy) == {"deny-mkdir", *LSM_ONLY}, inactive
        assert all("BPF-LSM is not usable" in by_policy[name] for name in LSM_ONLY), inactive
        assert "fmod_ret security_file_open (Override returns the error)" in log, log
        assert "fmod_ret security_path_mkdir (Override returns the error)" in log, log
    assert "kprobe security_path_mkdir" in log


def test_override_fails_open_with_eperm_only_for_the_prefix(agent):
    with pytest.raises(PermissionError) as exc:
        open(f"{BASE}/denied-file").close()
    assert exc.value.errno == errno.EPERM
    open(f"{BASE}/allowed-file").close()
    (ev,) = events_of(agent, "deny-open")
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE" and ev["return_value"] == -1
    assert ev["args"] == [{"file_arg": {"path": f"{BASE}/denied-file"}}]


def test_override_through_lsm_returns_the_errno(agent):
    # (where BPF-LSM is inactive, through fmod_ret on security_path_mkdir)
    with pytest.raises(PermissionError) as exc:
        os.mkdir(f"{BASE}/locked/sub")
    assert exc.value.errno == errno.EACCES
    assert not os.path.exists(f"{BASE}/locked/sub")
    os.mkdir(f"{BASE}/nomkdir-1")          # the inactive syscall policy did not block this
    (ev,) = events_of(agent, "deny-mkdir-lsm")
    assert ev["args"][0] == {"path_arg": {"path": f"{BASE}/locked"}}
    assert ev["return_value"] == -13


def test_path_and_dentry_arguments(agent):
    os.mkdir(f"{BASE}/parent/child")
    os.mkdir(f"{BASE}/elsewhere")
    (ev,) = events_of(agent, "mkdir-paths")
    assert ev["args"][0] == {"path_arg": {"path": f"{BASE}/parent"}}
    assert ev["args"][1]["path_arg"]["path"].endswith("/child")


def test_signal_action_from_lsmhooks(agent):
    if not features().lsm:
        not_applicable("BPF-LSM is not an active LSM (lsmhooks cannot attach)")
    code = f"open('{BASE}/usr1').close(); open('{BASE}/allowed-file').close(); print('survived')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == -signal.SIGUSR1 and "survived" not in r.stdout
    evs = events_of(agent, "signal-on-open")
    assert {(e["action"], e["signal"], e["args"][0]["file_arg"]["path"]) for e in evs} == \
        {("KPROBE_ACTION_SIGNAL", "SIGUSR1", f"{BASE}/usr1")}
    assert "process_lsm" in [k for e in agent.events() for k in e]


def test_fd_argument_is_resolved_to_its_path(agent):
    fd = os.open(f"{BASE}/fd-1", os.O_RDONLY)
    os.close(fd)
    fd = os.open(f"{BASE}/allowed-file", os.O_RDONLY)
    os.close(fd)
    evs = events_of(agent, "fd-close")
    assert [e["args"][0]["file_arg"]["path"] for e in evs] == [f"{BASE}/fd-1"]
