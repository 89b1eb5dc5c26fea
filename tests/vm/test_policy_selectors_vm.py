"""Process selectors on the guest's kernel: its verifier accepts them in
kprobe, fentry/LSM and syscall-kprobe programs, and they select the same
there.  Lean (an exec costs ~40 ms in the guest): one agent, four policies,
one short workload each; tests/kernel/test_policy_selectors_proc.py covers
every case on the host kernel.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from agent_harness import policy_events, policy_text, RunningAgent
from kernel_expect import features

BASE = "/tmp/thvmsel"
SH = f"{BASE}/bin/thvm-sh"

POLICIES = {
    # matchArgs Postfix + matchBinaries followChildren, kprobe/fentry on a kernel function
    "postfix-follow": f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/thvmsel/f.key"]
      matchBinaries:
      - operator: In
        followChildren: true
        values: ["{SH}"]
""",
    # several matchPIDs entries, isNamespacePID, followForks, on a syscall kprobe
    "pids": f"""
  kprobes:
  - call: sys_openat
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
        values: ["{BASE}/pids/"]
      matchPIDs:
      - operator: In
        isNamespacePID: true
        values: [1]
      - operator: NotIn
        followForks: true
        values: [HELPER]
""",
    # fd_install_caps.yaml's selector: namespaced capabilities only
    "caps-userns": f"""
  kprobes:
  - call: fd_install
    syscall: false
    args:
    - index: 0
      type: int
    - index: 1
      type: file
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/userns/"]
      matchCapabilities:
      - type: Effective
        operator: In
        isNamespaceCapability: true
        values: ["CAP_SYS_ADMIN"]
""",
    # changes since exec: capabilities at a kprobe, namespaces at BPF-LSM
    "capch": f"""
  kprobes:
  - call: fd_install
    syscall: false
    args:
    - index: 0
      type: int
    - index: 1
      type: file
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/capch/"]
      matchCapabilityChanges:
      - type: Effective
        operator: In
        values: ["CAP_SYS_ADMIN"]
""",
    "nsch": f"""
  lsmhooks:
  - hook: file_open
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/nsch/"]
      matchNamespaceChanges:
      - operator: In
        values: ["Uts"]
""",
}

# capability, then namespace change between opens; each reported once
CHANGES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def touch(p):
    os.close(os.open(p, os.O_RDONLY | os.O_CREAT, 0o600))
def set_sys_admin(on):
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    assert libc.capget(hdr, data) == 0
    data[0] = data[0] | 1 << 21 if on else data[0] & ~(1 << 21)    # effective, CAP_SYS_ADMIN
    assert libc.capset(hdr, data) == 0
b = sys.argv[1]
touch(b + '/capch/before'); touch(b + '/nsch/before')
set_sys_admin(False)
touch(b + '/capch/after1'); touch(b + '/capch/after2')
set_sys_admin(True)                              # unshare() needs it
assert libc.unshare(0x04000000) == 0            # CLONE_NEWUTS
touch(b + '/nsch/after1'); touch(b + '/nsch/after2')
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    shutil.rmtree(BASE, ignore_errors=True)
    for d in ("bin", "thvmsel", "pids", "userns", "capch", "nsch"):
        os.makedirs(f"{BASE}/{d}", exist_ok=True)
    shutil.copy2("/bin/dash", SH)
    for f in ("thvmsel/f.key", "pids/a", "pids/b", "userns/a", "userns/b"):
        pathlib.Path(f"{BASE}/{f}").write_text("x")
    # its descendants are excluded by the "pids" policy's NotIn followForks
    helper = subprocess.Popen(["sh", "-c", f"read go; unshare --pid --fork cat {BASE}/pids/b; true"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    d = tmp_path_factory.mktemp("policies")
    args = []
    for name, body in POLICIES.items():
        body = body.replace("HELPER", str(helper.pid))
        (d / f"{name}.yaml").write_text(policy_text(name, body))
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    a.helper = helper
    yield a
    a.stop()
    if helper.poll() is None:
        helper.kill()
        helper.wait()
    shutil.rmtree(BASE, ignore_errors=True)


def args_of(agent, name, count):
    out = []
    for body in policy_events(agent, name, count):
        a = body["args"][-1]
        out.append(a.get("file_arg", {}).get("path") or a.get("string_arg"))
    return out


def test_every_selector_hook_loads(agent):
    inactive = [line for line in agent.log_text().splitlines() if "not active" in line]
    if features().lsm:
        assert inactive == [], inactive
    else:   # BPF-LSM inactive: the lsmhooks policy cannot run, and says why
        assert len(inactive) == 1 and "policy nsch " in inactive[0], inactive
        assert "BPF-LSM is not usable" in inactive[0]
    assert "per-process state for policies: on" in agent.log_text()


def test_postfix_and_follow_children(agent):
    subprocess.run([SH, "-c", f"cat {BASE}/thvmsel/f.key; true"], check=True, capture_output=True)
    subprocess.run(["cat", f"{BASE}/thvmsel/f.key"], check=True, capture_output=True)   # not a child of SH
    subprocess.run([SH, "-c", f"cat {BASE}/pids/a; true"], check=True, capture_output=True)  # not the suffix
    paths = args_of(agent, "postfix-follow", 1)
    assert set(paths) == {f"{BASE}/thvmsel/f.key"}
    # one process: the child of SH (the guest's overlayfs calls security_file_open
    # for the overlay file and again for the real one, so one open may give two events)
    procs = {(b["process"]["pid"], b["process"]["binary"]) for b in policy_events(agent, "postfix-follow")}
    assert len(procs) == 1 and next(iter(procs))[1].endswith("/cat"), procs


def test_namespace_pid_and_follow_forks(agent):
    """Two matchPIDs entries ANDed: pid 1 in its pid namespace, and not a
    descendant of the helper."""
    agent.helper.stdin.write(b"go\n")
    agent.helper.stdin.close()
    assert agent.helper.wait(timeout=60) == 0         # its pid-1 cat: excluded by NotIn followForks
    subprocess.run(["unshare", "--pid", "--fork", "cat", f"{BASE}/pids/a"], check=True, capture_output=True)
    subprocess.run(["cat", f"{BASE}/pids/a"], check=True, capture_output=True)    # pid != 1 in its namespace
    assert args_of(agent, "pids", 1) == [f"{BASE}/pids/a"]


def test_namespace_capabilities(agent):
    subprocess.run(["unshare", "--user", "--map-root-user", "cat", f"{BASE}/userns/a"], check=True,
                   capture_output=True)
    subprocess.run(["cat", f"{BASE}/userns/b"], check=True, capture_output=True)   # host root: host user ns
    assert args_of(agent, "caps-userns", 1) == [f"{BASE}/userns/a"]


def test_capability_and_namespace_changes_once_each(agent):
    subprocess.run([sys.executable, "-c", CHANGES, BASE], check=True)
    subprocess.run(["cat", f"{BASE}/capch/after1", f"{BASE}/nsch/after1"], check=True, capture_output=True)
    assert args_of(agent, "capch", 1) == [f"{BASE}/capch/after1"]
    if features().lsm:      # nsch is an lsmhooks policy
        assert args_of(agent, "nsch", 1) == [f"{BASE}/nsch/after1"]
