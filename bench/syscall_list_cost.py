#!/usr/bin/env python3
"""BPF cost of the raw_syscalls/sys_enter fallback on syscalls it does NOT hook.

    sudo .venv/bin/python bench/syscall_list_cost.py                   # ~30 s
    sudo .venv/bin/python bench/syscall_list_cost.py --repo ../main    # another checkout: before/after

The syscall dispatcher (th_dispatch_enter; th_sys_enter in checkouts before it) runs on every syscall of every task; a hook lets through only
its syscalls (one, or a spec.lists list).  One agent per variant, each with
one syscall hook on dup3 (which the storm never calls); a getppid storm then
runs and, with kernel.bpf_stats_enabled, run_time_ns / run_cnt of the hook's
th_sys_enter is the cost of the non-matching path.  Variants needing lists
are skipped for a checkout that rejects them (`--repo` of an older one).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402

STORM_C = r"""
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    return 0;
}
"""
HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n"
VARIANTS = {
    "one syscall (sys_dup3)": "  kprobes:\n  - call: sys_dup3\n    syscall: true\n",
    "list of 2 (dup3, pivot_root)": ("  lists:\n  - {name: l, type: syscalls, values: [sys_dup3, sys_pivot_root]}\n"
                                     "  kprobes:\n  - call: \"list:l\"\n"),
}


def measure(repo: pathlib.Path, body: str, storm: pathlib.Path, calls: int, work: pathlib.Path) -> float | None:
    """ns per th_sys_enter run while `calls` getppid run; None: the checkout rejects the policy."""
    policy = work / "p.yaml"
    policy.write_text(HEADER.format(name="cost") + body)
    export = work / "events.json"
    (work / "policies.d").mkdir(exist_ok=True)      # private: not the host's /etc/tetragon
    conf = work / "tetrahost.toml"
    conf.write_text(f'[agent]\npolicy_dir = "{work}/policies.d"\n[metrics]\nenabled = false\n')
    agent = subprocess.Popen([sys.executable, "-m", "tetrahost.cli.main", "run", "--no-stdout", "--no-socket",
                              "--no-journald", "--config", str(conf), "--export-file", str(export),
                              "--policy", str(policy)],
                             cwd=repo, stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
    try:
        c.wait_until(lambda: "tetrahost ready" in (work / "agent.log").read_text() or agent.poll() is not None, 60)
        if agent.poll() is not None or "not active" in (work / "agent.log").read_text():
            return None
        costs = c.costs_during(agent.pid, lambda: subprocess.run([str(storm), str(calls)], check=True))
        rows = [r for r in costs if r[0] in ("th_dispatch_enter", "th_sys_enter")]   # the dispatcher runs first where there is one
        return rows[0][2] if rows else None
    finally:
        agent.terminate()
        agent.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=pathlib.Path, default=c.REPO, help="checkout whose agent runs (built)")
    ap.add_argument("--calls", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="thlistcost-"))
    storm = work / "storm"
    (work / "storm.c").write_text(STORM_C)
    subprocess.run(["gcc", "-O2", "-o", str(storm), str(work / "storm.c")], check=True)
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        print(f"{args.repo.resolve()}: th_sys_enter ns per run on syscalls it does not hook "
              f"(median of {args.rounds} x {args.calls} getppid)")
        for name, body in VARIANTS.items():
            costs = [measure(args.repo.resolve(), body, storm, args.calls, work) for _ in range(args.rounds)]
            shown = "rejected by this checkout" if None in costs else f"{statistics.median(costs):6.1f} ns"
            print(f"  {name:32} {shown}")
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
