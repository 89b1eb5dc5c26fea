#!/usr/bin/env python3
"""What the kernel's verifier spends on each entry program of the generic
hook object (csrc/bpf/generic.bpf.c), on this kernel: wall time of the load
and the instructions it processed (bpf_prog_info.verified_insns).

Every policy hook loads its own copy of the object with one entry program
(and its return half), so this is paid per hook at agent start and at every
policy reload that finds no verified spare; the 1M processed-instruction
limit is what a program must stay well under.  With --baseline OBJ (an older
build of generic.bpf.o) both are loaded alternately in the same run and the
ratio is printed.  Programs this kernel cannot load (kprobe, fentry, LSM on a
kernel without them) are listed as such.

  sudo .venv/bin/python bench/verifier_time.py [--runs 5] [--baseline old/generic.bpf.o]
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tetrahost.bpf import BpfError  # noqa: E402
from tetrahost.sensors.generic import load_hook_object  # noqa: E402

# entry program -> attach target (trampoline programs need one before load)
PROGRAMS = {
    "th_exec": "", "th_sys_enter": "", "th_sys_exit": "", "th_raw_tp": "", "th_tracepoint": "",
    "th_kprobe": "", "th_kretprobe": "", "th_lsm": "file_open",
    "th_fentry": "security_file_open", "th_fexit": "security_file_open",
}


def load_once(path: str, program: str, target: str) -> tuple[float, int]:
    started = time.perf_counter()
    with load_hook_object(((program, target),), {}, path=path) as obj:
        return time.perf_counter() - started, obj.program(program).verified_insns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--object", default=str(REPO / "build/bpf/generic.bpf.o"))
    parser.add_argument("--baseline", help="an older generic.bpf.o to compare with, in the same run")
    parser.add_argument("--programs", default=",".join(PROGRAMS), help="comma-separated (default: all)")
    args = parser.parse_args()
    objects = {"current": args.object, **({"baseline": args.baseline} if args.baseline else {})}
    print(f"{'program':<15}" + "".join(f"{k + ' ms':>14}{k + ' insns':>17}" for k in objects)
          + ("   time ratio" if args.baseline else ""))
    for name in args.programs.split(","):
        times: dict[str, list[float]] = {k: [] for k in objects}
        insns: dict[str, int] = {}
        try:
            for _ in range(args.runs):          # alternated, so drift hits both alike
                for key, path in objects.items():
                    elapsed, insns[key] = load_once(path, name, PROGRAMS.get(name, ""))
                    times[key].append(elapsed)
        except BpfError as exc:
            print(f"{name:<15}  does not load here: {str(exc).splitlines()[0][:90]}")
            continue
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row = f"{name:<15}" + "".join(f"{med[k]:>14.0f}{insns[k]:>17,}" for k in objects)
        if args.baseline:
            row += f"   {med['current'] / med['baseline']:>9.2f}x"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
