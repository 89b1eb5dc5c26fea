"""Return probes on Debian's 6.1 kernel: kretprobe, and fexit where kprobes
are not used, each with the return value in the event and matchReturnArgs
deciding in the kernel whether the event is posted.

Paths under BASE are private to this module; each policy proves what it
posts and what it leaves alone.
"""
from __future__ import annotations

import base64
import errno
import os
import pathlib

import pytest

from agent_harness import policy_events, start_with_policies

BASE = "/tmp/thvmret"

POLICIES = {
    # a kernel function's return value, with its arguments (kretprobe)
    "ret-permission": f"""
  kprobes:
  - call: security_file_permission
    syscall: false
    return: true
    args:
    - index: 0
      type: file
    - index: 1
      type: int
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/perm-"]
""",
    # Override at the entry (BPF-LSM), the errno seen by the return half
    "ret-deny": f"""
  kprobes:
  - call: security_file_open
    syscall: false
    return: true
    args:
    - index: 0
      type: file
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/deny-"]
      matchActions:
      - action: Override
        argError: -1
""",
    # Tetragon's openat_write: a syscall's return (kretprobe on the wrapper),
    # posted only for a successful open
    "ret-openat": f"""
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    - index: 2
      type: int
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{BASE}/openat-"]
      matchReturnArgs:
      - index: 0
        operator: GreaterThan
        values: ["0"]
""",
    # returnCopy: read(2)'s buffer, copied at the return (kretprobe on the wrapper)
    "ret-read": f"""
  kprobes:
  - call: sys_read
    syscall: true
    return: true
    args:
    - index: 0
      type: fd
    - index: 1
      type: char_buf
      returnCopy: true
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/read-"]
""",
}

FEXIT_POLICY = f"""
  kprobes:
  - call: security_file_permission
    syscall: false
    return: true
    args:
    - index: 0
      type: file
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/fexit-"]
      matchReturnArgs:
      - index: 0
        operator: Equal
        values: ["0"]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    os.makedirs(BASE, exist_ok=True)
    a = start_with_policies(tmp_path_factory, POLICIES)
    yield a
    a.stop()


def events_of(agent, name, count=1):
    return policy_events(agent, name, count)


def test_hooks_attach_with_their_return_half(agent):
    log = agent.log_text()
    assert "not active" not in log.lower()
    assert "return value from kretprobe security_file_permission" in log
    assert "return value from kretprobe security_file_open" in log      # entry is BPF-LSM
    assert "return value from kretprobe __x64_sys_openat" in log


def test_kernel_function_return_value(agent):
    pathlib.Path(f"{BASE}/perm-a").write_text("x")     # open for write, then write: 0 each
    evs = events_of(agent, "ret-permission")
    assert all(e["return"] == {"int_arg": 0} for e in evs)
    assert {e["args"][0]["file_arg"]["path"] for e in evs} == {f"{BASE}/perm-a"}


def test_override_errno_is_the_return_value(agent):
    with pytest.raises(PermissionError):
        open(f"{BASE}/deny-x", "w")
    ev = events_of(agent, "ret-deny")[0]
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE"
    assert ev["return"] == {"int_arg": -errno.EPERM}


def test_match_return_args_posts_only_successful_opens(agent):
    fd = os.open(f"{BASE}/openat-ok", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(FileNotFoundError):
        os.open(f"{BASE}/openat-missing/x", os.O_RDONLY)
    fd2 = os.open(f"{BASE}/openat-ok", os.O_RDONLY)    # the last one: the pipeline has caught up after it
    os.close(fd2)
    evs = events_of(agent, "ret-openat", 2)
    assert [(e["args"][1]["string_arg"], e["return"]["int_arg"]) for e in evs] == \
        [(f"{BASE}/openat-ok", fd), (f"{BASE}/openat-ok", fd2)]


def test_return_copy_of_a_syscall_buffer(agent):
    content = b"bytes read(2) returned"
    pathlib.Path(f"{BASE}/read-a").write_bytes(content)
    with open(f"{BASE}/read-a", "rb", buffering=0) as f:
        assert f.read(4096) == content
    ev = events_of(agent, "ret-read")[0]
    assert ev["return"] == {"int_arg": len(content)}
    assert base64.b64decode(ev["args"][1]["bytes_arg"]) == content


def test_fexit_where_kprobes_are_not_used(tmp_path_factory):
    """The same kind of hook on a kernel without kprobes: fentry + fexit
    (kprobes masked, the BPF trampolines are real)."""
    os.makedirs(BASE, exist_ok=True)
    a = start_with_policies(tmp_path_factory, {"ret-fexit": FEXIT_POLICY},
                    env={"TETRAHOST_AVOID_FEATURES": "kprobe,kretprobe"})
    try:
        assert "fentry security_file_permission" in a.log_text()
        assert "return value from fexit security_file_permission" in a.log_text()
        pathlib.Path(f"{BASE}/fexit-a").write_text("x")
        evs = events_of(a, "ret-fexit")
        assert evs and all(e["return"] == {"int_arg": 0} for e in evs)
        assert evs[0]["args"][0]["file_arg"]["path"] == f"{BASE}/fexit-a"
    finally:
        a.stop()
