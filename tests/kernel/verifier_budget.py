"""Used by tests/kernel/test_verifier_budget.py (on the host and in the guests): load one
entry program of generic.bpf.o and read what the verifier processed."""
from __future__ import annotations

from tetrahost.sensors.generic import load_hook_object

# A quarter of the kernel's 1M processed-instruction limit: the programs sat
# at 763k (th_exec) before the argument reader and the network and ancestor
# matchers became global functions (62k after); a selector or argument type
# that pushes one past this budget must first be made cheaper to verify.
BUDGET = 250_000


def verified_insns(program: str, target: str = "") -> int:
    with load_hook_object(((program, target),), {}) as obj:
        return obj.program(program).verified_insns
