"""The verifier's work for every generic hook entry program this kernel can
load stays far below its limit (older verifiers, e.g. Debian's 6.1, prune
less than newer ones: the same test runs in the guests of tests/vm)."""
from __future__ import annotations

import pytest

from agent_harness import require_root_and_bpf
from kernel_expect import features, not_applicable
from verifier_budget import BUDGET, verified_insns

# (program, attach target needed at load time, the probed feature it needs:
# None = raw_tp/tracepoint programs, which every supported kernel loads)
PROGRAMS = [
    ("th_exec", "", None), ("th_sys_enter", "", None), ("th_sys_exit", "", None),
    ("th_open_exit", "", None), ("th_raw_tp", "", None), ("th_tracepoint", "", None),
    ("th_kprobe", "", "kprobe"), ("th_kretprobe", "", "kretprobe"),
    ("th_kprobe_override", "", "override_return"),
    ("th_lsm", "file_open", "lsm"),
    ("th_fentry", "security_file_open", "fentry"), ("th_fexit", "security_file_open", "fexit"),
    ("th_fmod_ret", "security_file_open", "fmod_ret"),
]


@pytest.mark.parametrize("program,target,feature", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_entry_program_verifies_within_budget(program, target, feature):
    require_root_and_bpf()
    if feature and not getattr(features(), feature):
        not_applicable(f"tetrahost probe finds no {feature}, so {program} cannot load")
    insns = verified_insns(program, target)
    # every supported kernel (5.16+) reports verified_insns: 0 would mean the
    # measurement, not the program, is broken
    assert 0 < insns < BUDGET, f"{program}: the verifier processed {insns:,} instructions"


def test_syscall_dispatcher_loads():
    """The dispatcher's programs tail-call hook programs: the object must load."""
    require_root_and_bpf()
    from tetrahost.sensors.dispatch import SyscallDispatcher

    dispatcher = SyscallDispatcher()
    dispatcher.close()
