#!/usr/bin/env python3
"""Observer CPU per exec at the exec rates hosts really see, against execsnoop and bpftrace.

    sudo .venv/bin/python bench/exec_paced.py                     # ~3 minutes
    sudo .venv/bin/python bench/exec_paced.py --rates 20,100,500,2000 --seconds 10 --rounds 2
    sudo .venv/bin/python bench/exec_paced.py --baseline-repo /path/to/other/checkout

Why: exec_storm.py and event_rates.py exec as fast as the machine can, the
worst case for the kernel side; an agent in user space pays differently when
execs trickle.  tetrahost's programs submit without waking the agent, which
reads every 100 ms while records come and sleeps once a read finds none (the
next record wakes it), so at low rates a loop turn's fixed cost is shared by
few events and the Python code runs with cold caches; execsnoop and bpftrace
are woken for every event.  Which is cheaper per exec at a given rate is a
measurement, not an argument: this is it.

For each rate, each observer runs alone (order rotated each round), settles,
then a storm of fork+execve+wait of a copy of /usr/bin/true paced at that
rate runs for --seconds.  Observer CPU is the run time of all its threads
(/proc/PID/task/*/schedstat, ns) from the storm's start until 1 s after its
end (the same tail for every observer: long enough for tetrahost's 100 ms
drain), divided by the execs.  Its idle CPU (ms per second, measured for 3 s
before the storm) is printed beside it: it is part of the per-exec figure,
more so at low rates.  Each observer must report every exec (checked).
tetrahost runs with its default process fields and the file sink on tmpfs,
as in exec_storm.py; with --baseline-repo, that checkout's agent is measured
the same way.
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

TAIL_SECONDS = 1.0
IDLE_SECONDS = 3.0


def start(config: str, repo: pathlib.Path, workdir: pathlib.Path) -> c.Tool:
    if config == "execsnoop":
        return c.start_execsnoop(workdir)
    if config == "bpftrace":
        return c.start_bpftrace(workdir)
    return c.start_agent(workdir, workdir / "events.json", repo=repo)


def seen(config: str, tool: c.Tool, workdir: pathlib.Path, target: str) -> int:
    if config in ("execsnoop", "bpftrace"):
        return c.count_lines(tool.out, target)
    return c.count_agent(workdir / "events.json", target)["exec"]


def measure(config: str, repo: pathlib.Path, storm: c.Storm, rate: float, n: int,
            workdir: pathlib.Path) -> dict:
    tool = start(config, repo, workdir)
    try:
        c.wait_settled(tool.pid, 20)
        cpu = c.ThreadsCpu(tool.pid)
        t0 = cpu()
        time.sleep(IDLE_SECONDS)
        idle = (cpu() - t0) / IDLE_SECONDS
        t0 = cpu()
        wall, _ = storm.run(n, 1, rate)
        time.sleep(TAIL_SECONDS)
        used = cpu() - t0
    finally:
        tool.stop()
    got = seen(config, tool, workdir, str(storm.target))
    c.remove_exports(workdir / "events.json")
    return {"us_per_exec": used / n * 1e6, "idle_ms_s": idle * 1e3, "achieved": n / wall, "seen": got}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="20,100,500,2000", help="execs per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each paced storm")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--configs", default="tetrahost,execsnoop,bpftrace")
    ap.add_argument("--baseline-repo", type=pathlib.Path, help="a built checkout whose agent is measured too")
    args = ap.parse_args()
    c.require_root()
    rates = [float(r) for r in args.rates.split(",")]
    configs = [(name, c.REPO) for name in args.configs.split(",")]
    if args.baseline_repo:
        configs.insert(0, ("tetrahost baseline", args.baseline_repo.resolve()))
    print(f"# exec storms paced at {args.rates} execs/s, {args.seconds:g} s each, {args.rounds} round(s)\n"
          f"# {c.machine_line()}")
    if args.baseline_repo:
        rev = subprocess.run(["git", "-C", str(args.baseline_repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        print(f"# tetrahost baseline: {args.baseline_repo} ({rev})")
    storm = c.Storm()
    workdir = c.tmpfs_dir("thbench-paced-")
    results: dict[tuple[str, float], list[dict]] = {}
    try:
        storm.run(300)      # warm the page cache and the fork paths
        for rnd in range(args.rounds):
            for rate in rates:
                order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
                n = max(100, int(rate * args.seconds))
                for name, repo in order:
                    r = measure(name.split()[0], repo, storm, rate, n, workdir)
                    r["n"] = n
                    results.setdefault((name, rate), []).append(r)
                    print(f"  round {rnd + 1} {rate:6g}/s {name:20s} {r['us_per_exec']:6.1f} µs/exec  "
                          f"idle {r['idle_ms_s']:.2f} ms/s  seen {r['seen']}/{n}", flush=True)
    finally:
        storm.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n## Observer CPU per exec (all threads, storm + 1 s tail; median over rounds)\n")
    print("| execs/s (achieved) | " + " | ".join(name for name, _ in configs) + " |")
    print("|---|" + "---:|" * len(configs))
    missed = []
    for rate in rates:
        cells = []
        for name, _ in configs:
            rs = results[(name, rate)]
            cells.append(f"{c.median([r['us_per_exec'] for r in rs]):.1f} µs")
            missed += [f"{name} at {rate:g}/s saw {r['seen']}/{r['n']}" for r in rs if r["seen"] < r["n"]]
        achieved = c.median([r["achieved"] for (_, rt), rs in results.items() if rt == rate for r in rs])
        print(f"| {rate:g} ({achieved:,.0f}) | " + " | ".join(cells) + " |")
    print("\nIdle CPU, ms per second (median): " + ", ".join(
        f"{name} {c.median([r['idle_ms_s'] for (n_, _), rs in results.items() if n_ == name for r in rs]):.2f}"
        for name, _ in configs))
    if missed:
        print("\nNOT every exec reported: " + "; ".join(missed))
        return 1
    print("\nEvery observer reported every exec.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
