#!/usr/bin/env python3
"""Experiment: what the ring-buffer wake-up costs the BPF programs.

    sudo .venv/bin/python bench/ringbuf_wakeup.py          # ~1 minute
    sudo .venv/bin/python bench/ringbuf_wakeup.py --execs 5000 --rounds 5

Why: exec_storm.py shows on_fork and on_exit -- a handful of field reads and
one bpf_ringbuf_output() of 32 bytes -- costing about as much as on_exec.
bpf_ringbuf_output(..., 0) wakes the consumer when it is waiting, through
irq_work, which on x86 is a self-IPI: in a VM that is a VM exit.  This script
compiles variants of csrc/bpf/process.bpf.c (a patched copy in a temp dir;
the production sources are not touched) and runs the real agent on each via
TETRAHOST_BPF_DIR, with kernel.bpf_stats_enabled=1:

  stock      the current source, compiled here the same way as `make bpf`
  nowake-fx  fork and exit records submitted with BPF_RB_NO_WAKEUP; exec
             records still wake the agent, and the agent's loop wakes at
             least once a second anyway, so fork/exit records are at most
             one exec (or 1 s) late and are never lost

It prints BPF ns per run per program, and checks every exec still arrived.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402

NO_WAKE = {
    "submit(&ev, sizeof(ev), TH_LOSS_FORK);":
        "if (bpf_ringbuf_output(&events, &ev, sizeof(ev), BPF_RB_NO_WAKEUP)) count_loss(TH_LOSS_FORK);",
    "submit(&ev, sizeof(ev), TH_LOSS_EXIT);":
        "if (bpf_ringbuf_output(&events, &ev, sizeof(ev), BPF_RB_NO_WAKEUP)) count_loss(TH_LOSS_EXIT);",
}


def build(tmp: pathlib.Path, name: str, patches: dict[str, str]) -> pathlib.Path:
    src_root = tmp / f"src-{name}"
    shutil.copytree(c.REPO / "csrc", src_root)
    src = src_root / "bpf" / "process.bpf.c"
    text = src.read_text()
    for old, new in patches.items():
        if old not in text:
            raise SystemExit(f"process.bpf.c changed: cannot find {old!r} to patch")
        text = text.replace(old, new)
    src.write_text(text)
    out = tmp / name
    out.mkdir()
    # The flags of the Makefile's BPF_FLAGS.
    subprocess.run(["clang", "-g", "-O2", "-Wall", "-Werror", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    f"-I{src_root}/include/x86", f"-I{src_root}", "-c", str(src),
                    "-o", str(out / "process.bpf.o")], check=True)
    return out


def run_once(objdir: pathlib.Path, storm: c.Storm, n: int, workdir: pathlib.Path) -> dict:
    export = workdir / "events.json"
    agent = c.start_agent(workdir, export, env={**os.environ, "TETRAHOST_BPF_DIR": str(objdir)})
    try:
        progs, maps = c.bpf_ids(agent.pid)
        losses = c.map_named(maps, "losses")
        before = c.prog_stats(progs)
        cpu0 = c.proc_cpu(agent.pid)
        wall, cpu = storm.run(n)
        after = c.prog_stats(progs)
        c.wait_drained(export)
        agent_us = (c.proc_cpu(agent.pid) - cpu0) / n * 1e6
        lost = sum(c.percpu_sum(losses).values())
    finally:
        agent.stop()
    counts = c.count_agent(export, str(storm.target))
    c.remove_exports(export)
    ns = {}
    for pid, a in after.items():
        runs = a["run_cnt"] - before[pid]["run_cnt"]
        ns[a["name"]] = (a["run_time_ns"] - before[pid]["run_time_ns"]) / runs if runs else 0.0
    return {"rate": n / wall, "cpu_us": cpu / n * 1e6, "ns": ns, "lost": lost, "agent_us": agent_us, **counts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    c.require_root()
    print(f"# ring-buffer wake-up experiment: {args.execs} execs x {args.rounds} rounds\n# {c.machine_line()}")
    tmp = c.tmpfs_dir("thbench-wake-")
    storm = c.Storm()
    stats = pathlib.Path("/proc/sys/kernel/bpf_stats_enabled")
    orig = stats.read_text().strip()
    variants = {"stock": build(tmp, "stock", {}), "nowake-fx": build(tmp, "nowake-fx", NO_WAKE)}
    results = {k: [] for k in variants}
    try:
        stats.write_text("1")
        storm.run(300)
        for rnd in range(args.rounds):
            for name in (variants if rnd % 2 == 0 else reversed(list(variants))):
                r = run_once(variants[name], storm, args.execs, tmp)
                results[name].append(r)
                print(f"  round {rnd + 1} {name:10s} {r['rate']:6.0f} execs/s  "
                      + "  ".join(f"{k} {v:,.0f} ns" for k, v in sorted(r["ns"].items()))
                      + f"  seen exec {r['exec']} exit {r['exit']} lost {r['lost']}", flush=True)
    finally:
        stats.write_text(orig)
        storm.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n## BPF ns per run (median of {args.rounds}) and storm cost\n")
    print("| variant | on_exec | on_fork | on_exit | sum per exec cycle | execs/s | storm CPU µs/exec "
          "| agent CPU µs/exec | execs seen | exits seen | lost |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for name, rs in results.items():
        med = {p: c.median([r["ns"].get(p, 0) for r in rs]) for p in ("on_exec", "on_fork", "on_exit")}
        print(f"| {name} | {med['on_exec']:,.0f} | {med['on_fork']:,.0f} | {med['on_exit']:,.0f} "
              f"| {sum(med.values()):,.0f} | {c.median([r['rate'] for r in rs]):,.0f} "
              f"| {c.median([r['cpu_us'] for r in rs]):,.0f} | {c.median([r['agent_us'] for r in rs]):,.0f} "
              f"| {', '.join(str(r['exec']) for r in rs)} | {', '.join(str(r['exit']) for r in rs)} "
              f"| {max(r['lost'] for r in rs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
