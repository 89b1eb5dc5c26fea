"""The verifier's work for every generic hook entry program on Debian's 6.1
(its verifier prunes less than newer ones) stays far below its limit."""
from __future__ import annotations

import pytest

from verifier_budget import BUDGET, verified_insns

PROGRAMS = [("th_exec", ""), ("th_sys_enter", ""), ("th_sys_exit", ""), ("th_open_exit", ""), ("th_raw_tp", ""), ("th_tracepoint", ""),
            # (not th_kprobe_override: Debian's kernel lacks CONFIG_BPF_KPROBE_OVERRIDE)
            ("th_kprobe", ""), ("th_kretprobe", ""), ("th_lsm", "file_open"),
            ("th_fentry", "security_file_open"), ("th_fexit", "security_file_open")]


@pytest.mark.parametrize("program,target", PROGRAMS)
def test_entry_program_verifies_within_budget_on_6_1(program, target):
    insns = verified_insns(program, target)
    assert 0 < insns < BUDGET, f"{program}: the verifier processed {insns:,} instructions"


def test_syscall_dispatcher_loads_on_6_1():
    """The dispatcher's programs tail-call hook programs: the object must load."""
    from tetrahost.sensors.dispatch import SyscallDispatcher

    dispatcher = SyscallDispatcher()
    dispatcher.close()
