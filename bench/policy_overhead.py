#!/usr/bin/env python3
"""Cost of the seed policies on this machine's kernel, and proof that
non-matching activity never reaches user space.

    sudo .venv/bin/python bench/policy_overhead.py            # ~2 minutes
    sudo .venv/bin/python bench/policy_overhead.py --opens 500000 --execs 5000 --rounds 5

Three configurations, interleaved and rotated per round (median reported):
  baseline   nothing attached
  agent      tetrahost with no policy (process sensor only)
  seeds      tetrahost with the seed policies that attach on this kernel:
             block-cryptominers and detect-privilege-escalation through the
             sched_process_exec fallback, detect-container-escape through the
             raw_syscalls/sys_enter fallback, monitor-sensitive-files through
             the open-exit fallback on raw_syscalls/sys_exit (every openat's
             file resolved to its path: the open storm's cost)
  seeds+ret  (--with-return) the seeds plus a return probe on openat
             (`return: true`, matchReturnArgs) watching a path nobody opens:
             every syscall also passes the sys_exit fallback
Workloads: an open storm (open+close of /etc/hostname in a C loop: every
syscall passes the sys_enter fallback) and an exec storm (fork+exec+wait).
Neither matches any selector, so the policy event count must be 0; with
kernel.bpf_stats_enabled the BPF time per run of each hook program is shown.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402

SEEDS = c.REPO.parent / "shared" / "conformance" / "seed-policies"
POLICIES = ["block-cryptominers", "detect-privilege-escalation", "detect-container-escape",
            "monitor-sensitive-files"]
OPEN_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++) {
        int fd = open("/etc/hostname", O_RDONLY);
        if (fd < 0) return 1;
        close(fd);
    }
    return 0;
}
"""


RETURN_POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: bench-openat-return
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    return: true
    args:
    - {index: 1, type: string}
    returnArg: {index: 0, type: int}
    selectors:
    - matchArgs:
      - {index: 1, operator: Prefix, values: ["/nonexistent/bench/"]}
      matchReturnArgs:
      - {index: 0, operator: GT, values: ["0"]}
"""


def policy_args(config: str, workdir: pathlib.Path) -> list[str]:
    if config == "agent":
        return []
    extra = [a for p in POLICIES for a in ("--policy", str(SEEDS / f"{p}.yaml"))]
    if config == "seeds+ret":
        ret = workdir / "return.yaml"
        ret.write_text(RETURN_POLICY)
        extra += ["--policy", str(ret)]
    return extra


class OpenStorm:
    def __init__(self, workdir: pathlib.Path):
        src = workdir / "open.c"
        src.write_text(OPEN_C)
        self.exe = workdir / "openstorm"
        subprocess.run(["gcc", "-O2", "-o", str(self.exe), str(src)], check=True)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        subprocess.run([str(self.exe), str(n)], check=True)
        return time.perf_counter() - t0


def policy_events(export: pathlib.Path) -> int:
    return sum(c.count_lines(f, '"policy_name"') for f in c.export_files(export))


def measure(config, opens, storm, n_opens, n_execs, workdir) -> dict:
    export = workdir / "events.json"
    c.remove_exports(export)
    agent = None
    if config != "baseline":
        agent = c.start_agent(workdir, export, extra=policy_args(config, workdir))
    try:
        open_s = opens.run(n_opens)
        exec_s, _ = storm.run(n_execs)
    finally:
        if agent is not None:
            c.wait_drained(export)
            agent.stop()
    return {"opens": n_opens / open_s, "execs": n_execs / exec_s,
            "policy_events": policy_events(export) if agent else None}


def bpf_cost(config, opens, storm, n_opens, n_execs, workdir) -> list[tuple[str, float, float]]:
    export = workdir / "events.json"
    c.remove_exports(export)
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    agent = c.start_agent(workdir, export, extra=policy_args(config, workdir))
    try:
        return c.costs_during(agent.pid, lambda: (opens.run(n_opens), storm.run(n_execs)))
    finally:
        agent.stop()
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opens", type=int, default=200_000)
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--with-return", action="store_true",
                    help="also measure the seeds plus a non-matching return probe on openat")
    args = ap.parse_args()
    c.require_root()
    if not SEEDS.is_dir():
        print(f"seed policies not found at {SEEDS}", file=sys.stderr)
        return 2
    workdir = c.tmpfs_dir("thpolicy-")
    storm = c.Storm()
    opens = OpenStorm(workdir)
    print(f"# policy overhead: {args.opens} opens + {args.execs} execs x {args.rounds} rounds; {c.machine_line()}")
    configs = ["baseline", "agent", "seeds"] + (["seeds+ret"] if args.with_return else [])
    results = {k: [] for k in configs}
    try:
        opens.run(20_000)
        storm.run(200)
        for rnd in range(args.rounds):
            for cfg in configs[rnd % len(configs):] + configs[:rnd % len(configs)]:
                r = measure(cfg, opens, storm, args.opens, args.execs, workdir)
                results[cfg].append(r)
                print(f"  round {rnd + 1} {cfg:9s} {r['opens']:,.0f} opens/s  {r['execs']:,.0f} execs/s  "
                      f"policy events {r['policy_events']}")
        base_o = c.median([r["opens"] for r in results["baseline"]])
        base_e = c.median([r["execs"] for r in results["baseline"]])
        print("\n| config | opens/s | vs baseline | execs/s | vs baseline | policy events (non-matching work) |")
        print("|---|---:|---:|---:|---:|---|")
        for cfg in configs:
            o = c.median([r["opens"] for r in results[cfg]])
            e = c.median([r["execs"] for r in results[cfg]])
            ev = ", ".join(str(r["policy_events"]) for r in results[cfg]) if cfg != "baseline" else "-"
            print(f"| {cfg} | {o:,.0f} | {o / base_o:.2f} | {e:,.0f} | {e / base_e:.2f} | {ev} |")
        cost_config = configs[-1]
        print(f"\n| program ({cost_config} loaded) | runs | ns/run |")
        print("|---|---:|---:|")
        for name, runs, ns in bpf_cost(cost_config, opens, storm, args.opens, args.execs, workdir):
            print(f"| {name} | {runs:,} | {ns:,.0f} |")
    finally:
        storm.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
