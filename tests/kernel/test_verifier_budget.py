"""The verifier's work for the generic hook programs this kernel can load
stays far below its limit (tests/vm/test_verifier_budget_vm.py: the
kprobe, fentry and LSM ones on Debian's 6.1)."""
from __future__ import annotations

import pytest

from agent_harness import require_root_and_bpf
from verifier_budget import BUDGET, verified_insns


@pytest.mark.parametrize("program", ["th_exec", "th_sys_enter", "th_sys_exit", "th_open_exit", "th_raw_tp", "th_tracepoint"])
def test_entry_program_verifies_within_budget(program):
    require_root_and_bpf()
    insns = verified_insns(program)
    if insns == 0:
        pytest.skip("this kernel does not report verified_insns (5.16+)")
    assert insns < BUDGET, f"{program}: the verifier processed {insns:,} instructions"
