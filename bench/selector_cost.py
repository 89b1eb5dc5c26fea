#!/usr/bin/env python3
"""BPF cost of each kind of selector, and of the process state some need.

    sudo .venv/bin/python bench/selector_cost.py                 # ~1 minute
    sudo .venv/bin/python bench/selector_cost.py --opens 200000 --execs 1000

One agent per variant, each with one policy on the syscalls/sys_enter_openat
tracepoint (available on every kernel) whose selector filters a path nobody
opens after one kind of matcher, so every openat is fully evaluated and none
is posted.  An open storm and an exec storm run under each; with
kernel.bpf_stats_enabled, run_time_ns / run_cnt of the hook program and of
the process sensor's programs are printed.  The first row is the reference:
a Prefix matcher alone.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402
from policy_overhead import OpenStorm  # noqa: E402

NOBODY = "/nonexistent/bench/"
PREFIX = f"""      - index: 0
        operator: Prefix
        values: ["{NOBODY}"]
"""
# variant -> the selector (matchArgs on the path first, the matcher under test after)
VARIANTS = {
    "matchArgs Prefix (reference)": f"    - matchArgs:\n{PREFIX}",
    "matchArgs Postfix": """    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/nonexistent-suffix"]
""",
    "matchPIDs NotIn": f"""    - matchPIDs:
      - operator: NotIn
        values: [1]
      matchArgs:
{PREFIX}""",
    "matchPIDs followForks + isNamespacePID": f"""    - matchPIDs:
      - operator: NotIn
        followForks: true
        isNamespacePID: true
        values: [1]
      matchArgs:
{PREFIX}""",
    "matchBinaries NotIn": f"""    - matchBinaries:
      - operator: NotIn
        values: ["/nonexistent/bin"]
      matchArgs:
{PREFIX}""",
    "matchBinaries NotIn followChildren": f"""    - matchBinaries:
      - operator: NotIn
        followChildren: true
        values: ["/nonexistent/bin"]
      matchArgs:
{PREFIX}""",
    "matchCapabilityChanges": f"""    - matchCapabilityChanges:
      - type: Effective
        operator: NotIn
        values: ["CAP_SYS_ADMIN"]
      matchArgs:
{PREFIX}""",
}


def policy(selector: str) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: bench-selector
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    selectors:
{selector}"""


def measure(selector: str, opens: OpenStorm, storm: c.Storm, n_opens: int, n_execs: int,
            workdir: pathlib.Path) -> dict[str, float]:
    export = workdir / "events.json"
    c.remove_exports(export)
    (workdir / "p.yaml").write_text(policy(selector))
    agent = c.start_agent(workdir, export, extra=["--policy", str(workdir / "p.yaml")])
    try:
        costs = c.costs_during(agent.pid, lambda: (opens.run(n_opens), storm.run(n_execs)))
        log = agent.err.read_text()
    finally:
        agent.stop()
    if "not active" in log.lower():
        raise SystemExit(f"the policy did not attach:\n{log}")
    return {name: ns for name, _, ns in costs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opens", type=int, default=100_000)
    ap.add_argument("--execs", type=int, default=500)
    args = ap.parse_args()
    c.require_root()
    workdir = c.tmpfs_dir("thselcost-")
    storm = c.Storm()
    opens = OpenStorm(workdir)
    print(f"# selector cost: {args.opens} opens + {args.execs} execs per variant; {c.machine_line()}")
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        print("\n| selector | hook ns/openat | on_exec ns | on_fork ns | on_exit ns |")
        print("|---|---:|---:|---:|---:|")
        for name, selector in VARIANTS.items():
            ns = measure(selector, opens, storm, args.opens, args.execs, workdir)
            print(f"| {name} | {ns.get('th_tracepoint', 0):,.0f} | {ns.get('on_exec', 0):,.0f} | "
                  f"{ns.get('on_fork', 0):,.0f} | {ns.get('on_exit', 0):,.0f} |", flush=True)
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=True)
        storm.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
