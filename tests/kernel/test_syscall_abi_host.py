"""Syscall ABIs on the kernel the tests run on: syscall64 arguments, InMap on
syscall numbers, 32-bit entries of syscall lists, and spec.enforcers.

The workload (abi_calls) makes the same numbers through both ABIs, where they
name different syscalls (41: x86_64 socket, i386 dup), so a hook that ignores
the ABI matches the wrong one.  Absence is checked after RunningAgent.settle()
(a marked exec behind everything the workload did), never after a sleep.
"""
from __future__ import annotations

import os
import uuid

import pytest

from abi_calls import (I386, I386_DUP, I386_GETPID, I386_GETPPID, X64_DUP, X64_DUP2, X64_GETPID, X64_GETPPID,
                       X64_SOCKET, build, run)
from agent_harness import policy_events, start_with_policies
from kernel_expect import enforcer_method, i386_list_method

pytestmark = pytest.mark.kernel

ID = uuid.uuid4().hex[:6]
IDS, DUPS, LIST32, LIST64, KILL, OPEN = (f"{n}-{ID}" for n in ("abi-ids", "abi-dups", "abi-l32", "abi-l64",
                                                                "abi-kill", "abi-open"))
MARKED = f"/tmp/th-abi-open-{ID}"


def ids_policy(binary: str) -> str:
    """raw_syscalls' id as syscall64, InMap on getppid of both ABIs."""
    return f"""
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: syscall64
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
      matchArgs:
      - index: 0
        operator: InMap
        values: ["{X64_GETPPID}", "{I386_GETPPID | I386}"]
"""


def dups_policy(binary: str) -> str:
    """Tetragon's list-syscalls-tracepoint.yaml: a uint64 id InMap a syscall list."""
    return f"""
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2"]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: uint64
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
      matchArgs:
      - index: 0
        operator: InMap
        values: ["list:dups"]
"""


def list_policy(binary: str, value: str) -> str:
    return f"""
  lists:
  - name: one
    type: syscalls
    values: ["{value}"]
  kprobes:
  - call: "list:one"
    args:
    - index: 0
      type: int
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
"""


def kill_policy(binary: str) -> str:
    """Tetragon's killer.yaml, for one binary."""
    return f"""
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2", "__ia32_sys_dup"]
  enforcers:
  - calls: ["list:dups"]
  tracepoints:
  - subsystem: raw_syscalls
    event: sys_enter
    args:
    - index: 4
      type: syscall64
    selectors:
    - matchArgs:
      - index: 0
        operator: InMap
        values: ["list:dups"]
      matchBinaries:
      - operator: In
        values: ["{binary}"]
      matchActions:
      - action: NotifyEnforcer
        argError: -1
        argSig: 9
"""


def open_policy(binary: str) -> str:
    """security_file_open (the open family's sys_exit where nothing can hook it)."""
    return f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{MARKED}"]
"""


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return {name: build(tmp_path_factory, name) for name in ("th-abi", "th-abi-kill")}


@pytest.fixture(scope="module")
def agent(tmp_path_factory, binaries):
    b, k = binaries["th-abi"], binaries["th-abi-kill"]
    a = start_with_policies(tmp_path_factory, {
        IDS: ids_policy(b), DUPS: dups_policy(b), LIST32: list_policy(b, "__ia32_sys_dup"),
        LIST64: list_policy(b, "sys_dup"), KILL: kill_policy(k), OPEN: open_policy(b)})
    yield a
    assert a.stop() == 0


def test_syscall64_names_the_id_and_its_abi(agent, binaries):
    out = run(binaries["th-abi"], f"x:{X64_GETPPID}", f"i:{I386_GETPPID}", f"x:{X64_GETPID}", f"i:{I386_GETPID}")
    assert out.returncode == 0, out
    events = policy_events(agent, IDS, count=2)
    assert sorted((e["args"][0]["syscall_id"]["id"], e["args"][0]["syscall_id"]["abi"]) for e in events) == [
        (I386_GETPPID, "i386"), (X64_GETPPID, "x64")]


def test_inmap_list_on_a_uint64_id_matches_the_listed_syscalls_only(agent, binaries):
    out = run(binaries["th-abi"], f"x:{X64_DUP}:0", f"x:{X64_DUP2}:0:200", f"i:{I386_DUP}:0", f"x:{X64_GETPID}")
    assert out.returncode == 0, out
    events = policy_events(agent, DUPS, count=2)
    ids = sorted(int(next(iter(e["args"][0].values()))) for e in events)
    assert ids == [X64_DUP, X64_DUP2]


def test_a_32_bit_list_entry_matches_32_bit_calls_and_not_the_64_bit_number(agent, binaries):
    log = agent.log_text()
    assert i386_list_method() in log, log
    # x86_64 socket and i386 dup share number 41; dup(2) through both ABIs (the
    # other tests use fd 0: the workload binary is shared)
    out = run(binaries["th-abi"], f"x:{X64_SOCKET}:-1:-1", f"i:{I386_DUP}:2", f"x:{X64_DUP}:2")
    assert out.returncode == 0, out
    agent.wait_events(lambda e: any(b.get("policy_name") in (LIST32, LIST64) and b["args"][0]["int_arg"] == 2
                                    for b in e.values() if isinstance(b, dict) and "args" in b), 2)
    events32 = [(e["function_name"], e["args"][0]["int_arg"]) for e in policy_events(agent, LIST32)]
    events64 = [(e["function_name"], e["args"][0]["int_arg"]) for e in policy_events(agent, LIST64)]
    assert [e for e in events32 if e[1] != 0] == [("__ia32_sys_dup", 2)]    # not socket(-1, -1)
    assert [e for e in events64 if e[1] != 0] == [("__x64_sys_dup", 2)]     # not the i386 dup(2)


def test_enforcer_kills_at_the_listed_syscalls_of_either_abi(agent, binaries):
    log = agent.log_text()
    assert enforcer_method() in log, log
    k = binaries["th-abi-kill"]
    spared = [run(k, f"x:{X64_GETPID}"), run(k, f"x:{X64_SOCKET}:-1:-1")]
    killed = [run(k, f"x:{X64_DUP}:0"), run(k, f"i:{I386_DUP}:0"), run(k, f"x:{X64_DUP2}:0:200")]
    assert [p.returncode for p in spared] == [0, 0], spared
    assert [p.returncode for p in killed] == [-9, -9, -9], killed
    events = policy_events(agent, KILL, count=3)
    assert sorted((e["args"][0]["syscall_id"]["id"], e["args"][0]["syscall_id"]["abi"], e["action"])
                  for e in events) == [(X64_DUP, "x64", "KPROBE_ACTION_NOTIFYENFORCER"),
                                       (X64_DUP2, "x64", "KPROBE_ACTION_NOTIFYENFORCER"),
                                       (I386_DUP, "i386", "KPROBE_ACTION_NOTIFYENFORCER")]


def test_a_32_bit_open_is_seen_by_the_file_open_hook(agent, binaries):
    with open(MARKED, "w") as f:
        f.write("x")
    try:
        out = run(binaries["th-abi"], "open32", MARKED)
        assert out.returncode == 0, out
        events = policy_events(agent, OPEN, count=1)
        # one open, one event, whatever the hook (kprobe, fentry, BPF-LSM or
        # the open family's sys_exit) and on the guests' overlayfs /tmp too
        assert [e["args"][0]["file_arg"]["path"] for e in events] == [MARKED], events
    finally:
        os.unlink(MARKED)
