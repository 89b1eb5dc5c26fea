#!/usr/bin/env python3
"""What running tetrahost costs a host at rest: time to ready, the agent's
memory, and the kernel memory of its BPF programs and maps, with and
without the seed policies, beside execsnoop and bpftrace started the same
way in the same run.

  sudo .venv/bin/python bench/footprint.py [--execs 2000] [--rounds 3]

Per configuration (median of --rounds starts):
  ready s      start -> ready (tetrahost: its "ready" log line, after every
               policy is loaded and attached; peers: their probes attached)
  RSS MiB      the process's resident memory at rest (2 s after ready: the
               agent's warm pool of verified policy objects fills then), and
               after --execs execs went by (the process cache holds live processes)
  BPF KiB      bytes_memlock of the programs and maps the process holds
               (kernel memory; the ring buffer is most of tetrahost's)
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402

SEEDS = c.REPO.parent / "shared" / "conformance" / "seed-policies"
POLICIES = ("block-cryptominers", "detect-container-escape", "detect-privilege-escalation",
            "monitor-sensitive-files")


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bpf_kib(pid: int) -> float:
    progs, maps = c.bpf_ids(pid)
    total = sum(p.get("bytes_memlock", 0) for p in c.bpftool_json("prog", "show") if p["id"] in progs)
    total += sum(m.get("bytes_memlock", 0) for m in c.bpftool_json("map", "show") if m["id"] in maps)
    return total / 1024


def start(config: str, workdir: pathlib.Path) -> c.Tool:
    if config == "tetrahost":
        return c.start_agent(workdir, workdir / "events.json")
    if config == "tetrahost+seeds":
        extra = [a for p in POLICIES for a in ("--policy", str(SEEDS / f"{p}.yaml"))]
        return c.start_agent(workdir, workdir / "events.json", extra=extra)
    if config == "execsnoop":
        return c.start_execsnoop(workdir)
    return c.start_bpftrace(workdir)


def main() -> int:
    c.require_root()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    configs = ["tetrahost", "tetrahost+seeds"]
    configs += [name for name, tool in (("execsnoop", "/usr/sbin/execsnoop"), ("bpftrace", "bpftrace"))
                if shutil.which(tool)]
    storm = c.Storm()
    print(f"# footprint: {args.rounds} starts per configuration, {args.execs} execs after each; {c.machine_line()}")
    print("\n| observer | ready s | RSS MiB at rest | RSS MiB after execs | BPF KiB (progs + maps) |")
    print("|---|---:|---:|---:|---:|")
    try:
        for config in configs:
            rows = []
            for _ in range(args.rounds):
                workdir = c.tmpfs_dir("thfoot-")
                tool = start(config, workdir)
                ready = tool.ready_s
                try:
                    time.sleep(2)
                    rest, kib = rss_mib(tool.pid), bpf_kib(tool.pid)
                    storm.run(args.execs)
                    rows.append((ready, rest, rss_mib(tool.pid), kib))
                finally:
                    tool.stop()
                    shutil.rmtree(workdir, ignore_errors=True)
            med = [c.median([r[i] for r in rows]) for i in range(4)]
            print(f"| {config} | {med[0]:.2f} | {med[1]:.1f} | {med[2]:.1f} | {med[3]:,.0f} |")
    finally:
        storm.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
