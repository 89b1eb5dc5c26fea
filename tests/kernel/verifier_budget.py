"""Shared by tests/kernel/test_verifier_budget.py and its VM twin: load one
entry program of generic.bpf.o and read what the verifier processed."""
from __future__ import annotations

from agent_harness import REPO
from tetrahost.bpf import BpfObject

OBJECT = REPO / "build" / "bpf" / "generic.bpf.o"
# A quarter of the kernel's 1M processed-instruction limit: the programs sat
# at 763k (th_exec) before the argument reader and the network and ancestor
# matchers became global functions (62k after); a selector or argument type
# that pushes one past this budget must first be made cheaper to verify.
BUDGET = 250_000


def verified_insns(program: str, target: str = "") -> int:
    obj = BpfObject(OBJECT)
    try:
        for prog in obj.programs.values():
            prog.autoload = prog.name == program
        if target:
            obj.program(program).set_attach_target(target)
        obj.load()
        return obj.program(program).verified_insns
    finally:
        obj.close()
