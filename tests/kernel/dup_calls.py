"""Workloads and policies of tests/kernel/test_syscall_lists_host.py: the dup
family through libc, and a private copy of `true` whose syscalls a list sees.

Python's os.dup/os.dup2 go through fcntl and dup3, so libc (ctypes) is what
makes exactly one dup, one dup2 and one dup3 syscall.  Only calls on
SOURCE_FD match the policy: pytest's own output capture calls dup2 too.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import subprocess

SOURCE_FD = 250         # a number nothing else in the test process uses


def list_policy(pid: int) -> str:
    """spec body: one hook over the list (dup, dup2), for `pid` and SOURCE_FD only."""
    return f"""
  lists:
  - name: dups
    type: syscalls
    values: ["sys_dup", "sys_dup2"]
  kprobes:
  - call: "list:dups"
    args:
    - index: 0
      type: int
    selectors:
    - matchPIDs:
      - operator: In
        values: [{pid}]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{SOURCE_FD}"]
"""


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def call_dup_dup2_dup3() -> None:
    """One dup, one dup2 and one dup3 of SOURCE_FD (then closed again)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/dev/null") as f:
        fd = fcntl.fcntl(f.fileno(), fcntl.F_DUPFD, SOURCE_FD)    # fcntl: not in the list
    try:
        assert fd == SOURCE_FD, f"fd {SOURCE_FD} is taken"
        copies = [_check(libc.dup(fd)), _check(libc.dup2(fd, fd + 1)), _check(libc.dup3(fd, fd + 2, os.O_CLOEXEC))]
        for copy in copies:
            os.close(copy)
    finally:
        os.close(fd)


def functions_and_fds(events: list[dict]) -> list[tuple[str, int]]:
    return sorted((e["function_name"], e["args"][0]["int_arg"]) for e in events)


EXPECTED = [("__x64_sys_dup", SOURCE_FD), ("__x64_sys_dup2", SOURCE_FD)]    # and none for dup3


def generated_policy(binary: str) -> str:
    """spec body: every syscall (generated_syscalls), for one binary only."""
    return f"""
  lists:
  - name: all
    type: generated_syscalls
  kprobes:
  - call: "list:all"
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
"""


def binary_policy(binary: str, syscalls: list[str]) -> str:
    """spec body: the named syscalls, for one binary only."""
    values = ", ".join(f'"sys_{name}"' for name in syscalls)
    return f"""
  lists:
  - name: true-calls
    type: syscalls
    values: [{values}]
  kprobes:
  - call: "list:true-calls"
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{binary}"]
"""


def private_true(path: str) -> None:
    """A copy of /usr/bin/true at `path`, which no other process runs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy2("/usr/bin/true", path)


def run_private_true(path: str) -> None:
    subprocess.run([path], check=True)


# syscalls every dynamically linked `true` makes after its exec, whatever the libc version
ALWAYS_CALLED_BY_TRUE = {"__x64_sys_brk", "__x64_sys_mmap", "__x64_sys_exit_group"}
