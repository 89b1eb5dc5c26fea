"""spec.lists on the kernel the tests run on: one hook over a list of syscalls.

Without kprobes (this machine) the list hook is one raw_syscalls/sys_enter
program whose syscall set holds dup and dup2; with kprobes, one kprobe per
syscall function (kernel_expect says which).  Each call of either gives one event naming
the syscall that fired (function_name "__x64_sys_dup" / "__x64_sys_dup2", as
Tetragon shows a list hook); dup3, outside the list, gives none.
"""
from __future__ import annotations

import os

import pytest

from tetrahost.sensors.syscalls_x86_64 import SYSCALLS_X86_64

from agent_harness import policy_events, start_with_policies
from kernel_expect import syscall_list_method
from dup_calls import (ALWAYS_CALLED_BY_TRUE, EXPECTED, call_dup_dup2_dup3, functions_and_fds,
                       generated_policy, list_policy, private_true, run_private_true)

pytestmark = pytest.mark.kernel

NAME = "dup-list"
ALL_NAME = "all-syscalls-of-one-binary"
TRUE = "/tmp/thlists/true-for-lists"
EVERY_SYSCALL = len(SYSCALLS_X86_64)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    private_true(TRUE)
    a = start_with_policies(tmp_path_factory, {NAME: list_policy(os.getpid()), ALL_NAME: generated_policy(TRUE)})
    yield a
    a.stop()


def test_attaches_one_program_filtered_to_the_set(agent):
    log = agent.log_text()
    assert all(words in log for words in syscall_list_method(2)), log


def test_one_event_per_listed_syscall_with_its_function_name(agent):
    call_dup_dup2_dup3()
    events = policy_events(agent, NAME, count=2)
    assert functions_and_fds(events) == EXPECTED
    assert all(e["process"]["pid"] == os.getpid() for e in events)


def test_generated_list_sees_every_syscall_of_the_binary(agent):
    log = agent.log_text()
    assert all(words in log for words in syscall_list_method(EVERY_SYSCALL)), log
    run_private_true(TRUE)
    events = policy_events(agent, ALL_NAME, count=len(ALWAYS_CALLED_BY_TRUE))
    functions = {e["function_name"] for e in events}
    assert ALWAYS_CALLED_BY_TRUE <= functions
    assert all(f.startswith("__x64_sys_") for f in functions)
    assert {e["process"]["binary"] for e in events} == {TRUE}
