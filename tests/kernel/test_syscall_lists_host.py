"""spec.lists on the kernel the tests run on: one hook over a list of syscalls.

Without kprobes (this machine) the list hook is one raw_syscalls/sys_enter
program whose syscall set holds the list; with kprobes, one loaded kprobe
program linked to each syscall function (kernel_expect says which).  Each call
gives one event naming the syscall that fired (function_name "__x64_sys_dup" /
"__x64_sys_dup2", as Tetragon shows a list hook); dup3, outside the list,
gives none.

A generated_syscalls list (every syscall, 362) is one program and a set on a
kernel without kprobes, so there the agent runs it and `true`'s syscalls are
seen.  With kprobes the agent links the program to each function, one link per
function (it does not use kprobe.multi links): under QEMU TCG that took ~35 s
to attach and a minute to detach on 6.1.  There the agent runs an explicit
list of the syscalls `true` makes (the same per-function linking, a few
links), and the generated list's plan is checked by `tetrahost policy check`,
which loads the program without attaching it.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tetrahost.arch import SYSCALLS_X86_64

from agent_harness import REPO, policy_events, policy_text, start_with_policies
from kernel_expect import features, syscall_list_method
from dup_calls import (ALWAYS_CALLED_BY_TRUE, EXPECTED, binary_policy, call_dup_dup2_dup3, functions_and_fds,
                       generated_policy, list_policy, private_true, run_private_true)

pytestmark = pytest.mark.kernel

NAME = "dup-list"
BINARY_NAME = "syscalls-of-one-binary"
TRUE = "/tmp/thlists/true-for-lists"
EVERY_SYSCALL = len(SYSCALLS_X86_64)
TRUE_SYSCALLS = sorted(f.removeprefix("__x64_sys_") for f in ALWAYS_CALLED_BY_TRUE)


def binary_list_is_generated() -> bool:
    """The agent runs the generated list where it is one program (no kprobes)."""
    return not features().kprobe


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    private_true(TRUE)
    binary = generated_policy(TRUE) if binary_list_is_generated() else binary_policy(TRUE, TRUE_SYSCALLS)
    a = start_with_policies(tmp_path_factory, {NAME: list_policy(os.getpid()), BINARY_NAME: binary})
    yield a
    a.stop()


def test_attaches_one_program_for_the_list(agent):
    log = agent.log_text()
    assert all(words in log for words in syscall_list_method(2)), log
    if features().kprobe:
        assert "kprobe on 2 functions of 2 syscalls (__x64_sys_dup, __x64_sys_dup2)" in log, log


def test_one_event_per_listed_syscall_with_its_function_name(agent):
    call_dup_dup2_dup3()
    events = policy_events(agent, NAME, count=2)
    assert functions_and_fds(events) == EXPECTED
    assert all(e["process"]["pid"] == os.getpid() for e in events)
    assert all(all(words in e["attach"] for words in syscall_list_method(2)) for e in events), events


def test_list_for_one_binary_sees_its_syscalls(agent):
    count = EVERY_SYSCALL if binary_list_is_generated() else len(TRUE_SYSCALLS)
    log = agent.log_text()
    assert all(words in log for words in syscall_list_method(count)), log
    run_private_true(TRUE)
    events = policy_events(agent, BINARY_NAME, count=len(ALWAYS_CALLED_BY_TRUE))
    functions = {e["function_name"] for e in events}
    assert ALWAYS_CALLED_BY_TRUE <= functions
    assert all(f.startswith("__x64_sys_") for f in functions)
    if not binary_list_is_generated():
        assert functions == ALWAYS_CALLED_BY_TRUE      # the listed ones, nothing else
    assert {e["process"]["binary"] for e in events} == {TRUE}


def test_generated_list_loads_with_the_method_this_kernel_allows(tmp_path):
    """`tetrahost policy check` plans the generated list and loads its program
    (no attach): every syscall, by the method the probed features give."""
    policy = tmp_path / "generated.yaml"
    policy.write_text(policy_text("generated-syscalls", generated_policy(TRUE)))
    out = subprocess.run([sys.executable, "-m", "tetrahost.cli.main", "policy", "check", str(policy)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    attach = next(line for line in out.stdout.splitlines() if line.strip().startswith("attach:"))
    assert all(words in attach for words in syscall_list_method(EVERY_SYSCALL)), attach
    assert "verified: the kernel loaded it" in attach, attach
