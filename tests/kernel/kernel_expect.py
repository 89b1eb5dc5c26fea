"""What the kernel tests expect on the kernel they run on, derived from
`tetrahost probe` (tetrahost.sensors.probe.kernel_features), never from a
machine: the same tests run on this machine's kernel, on Debian 12's 6.1 and
6.12, with BPF-LSM inactive, and on PREEMPT_RT (tests/vm/run.py --suite kernel).

The expectations are spelled out here from the kernel's features, on
purpose not by calling the agent's planner: a planner that picks the wrong
method must fail these tests.
"""
from __future__ import annotations

import pytest

from tetrahost.sensors.probe import kernel_features

# The prefix of a skip that is right on this kernel (a feature it lacks, not
# the test's fault).  `make test-host` and the guest runs fail on any other skip.
NOT_APPLICABLE = "not applicable on this kernel"


def not_applicable(why: str) -> None:
    pytest.skip(f"{NOT_APPLICABLE}: {why}")


def features():
    return kernel_features()


def exec_kill_method() -> str:
    """How an enforcing exec hook (security_bprm_check + Sigkill) attaches:
    the start of its attach text."""
    f = features()
    if f.lsm:
        return "BPF-LSM bprm_check_security"
    if f.fmod_ret:
        return "fmod_ret security_bprm_check"
    if f.kprobe:
        return "kprobe security_bprm_check"
    return "raw_tp sched_process_exec"


def exec_monitor_method() -> str:
    """An exec hook that only posts (detect-privilege-escalation)."""
    f = features()
    if f.lsm:
        return "BPF-LSM bprm_check_security"
    if f.kprobe:
        return "kprobe security_bprm_check"
    if f.fentry:
        return "fentry security_bprm_check"
    return "raw_tp sched_process_exec"


def syscall_method(name: str) -> str:
    """A syscall hook that does not override (sys_setns, sys_write...)."""
    f = features()
    if f.kprobe:
        return f"kprobe __x64_sys_{name}"
    if f.fentry:
        return f"fentry __x64_sys_{name}"
    return "raw_tp sys_enter"


def syscall_return_method(name: str) -> str:
    """Where a `return: true` syscall hook reads the return value."""
    f = features()
    if f.kprobe or f.fentry:
        if f.kretprobe:
            return f"return value from kretprobe __x64_sys_{name}"
        if f.fexit:
            return f"return value from fexit __x64_sys_{name}"
    return "return value from raw_tp sys_exit"


def syscall_list_method(count: int) -> tuple[str, ...]:
    """Words the attach text of a list hook of `count` syscalls must hold."""
    if features().kprobe:
        return ("kprobe on ", f"functions of {count} syscalls")
    return (f"raw_tp sys_enter filtered to a set of {count} syscalls",)


def enforcer_method() -> str:
    """How spec.enforcers attaches: kprobes with bpf_override_return return
    argError and signal; elsewhere the syscalls' exit signals only."""
    f = features()
    if f.kprobe and f.override_return:
        return "with bpf_override_return (argError returned, argSig sent)"
    return "argError is NOT returned on this kernel"


def i386_list_method() -> str:
    """A list hook whose one entry is __ia32_sys_dup."""
    if features().kprobe:
        return "functions of 1 syscall (__ia32_sys_dup)"
    return "raw_tp sys_enter filtered to a set of 1 syscall (i386/dup)"
