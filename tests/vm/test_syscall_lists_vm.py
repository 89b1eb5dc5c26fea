"""spec.lists on Debian's 6.1 kernel: one loaded kprobe program, attached to
__x64_sys_dup and __x64_sys_dup2 (one link each).  Each call gives one event
whose function_name is the function that fired, read from the syscall's own
registers; dup3, outside the list, gives none.

A generated_syscalls list is tested on the host (tests/kernel) only: here its
362 kprobes took ~35 s to attach and about a minute to detach under QEMU TCG (one
link per function; kprobe.multi links would make it one), too much for the
suite.  The mechanism, one loaded program linked to several functions, is
what the dup list here exercises."""
from __future__ import annotations

import os

import pytest

from agent_harness import policy_events, start_with_policies
from dup_calls import EXPECTED, call_dup_dup2_dup3, functions_and_fds, list_policy

NAME = "dup-list-kprobes"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = start_with_policies(tmp_path_factory, {NAME: list_policy(os.getpid())})
    yield a
    a.stop()


def test_attaches_one_kprobe_program_to_each_function(agent):
    assert "kprobe on 2 functions of 2 syscalls (__x64_sys_dup, __x64_sys_dup2)" in agent.log_text()


def test_one_event_per_listed_syscall_with_its_function_name(agent):
    call_dup_dup2_dup3()
    events = policy_events(agent, NAME, count=2)
    assert functions_and_fds(events) == EXPECTED
    assert all(e["process"]["pid"] == os.getpid() for e in events)
    assert all(e["attach"].startswith("kprobe on 2 functions") for e in events)

