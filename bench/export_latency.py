#!/usr/bin/env python3
"""Exec-to-export latency: from a process's exec to its line in the export file.

    sudo .venv/bin/python bench/export_latency.py --baseline-repo /path/to/previous/main --execs 40

One agent per checkout (the four seed policies loaded, file sink on tmpfs, as
in bench/event_rates.py).  On an otherwise idle agent, --execs times: a copy
of /bin/true with a unique argument is run, and the export file is watched
(read every millisecond) until that exec's line is there.  Latency = line
seen - exec started (the wall clock just before the fork).  Execs are spaced
by --gap seconds on average, drawn at random between half and one and a half
of it: a fixed gap would keep the same phase against the agent's drain timer
(checkouts before the agent slept on an idle ring polled every 100 ms) and
measure one point of it.  Each exec finds the agent asleep, the case where
batching and wake-ups decide the latency (records are submitted without
waking the agent, except the first after it went to sleep and once 64 KiB
wait: csrc/bpf/lib/common.bpf.h).  Checkouts alternate exec by exec, so both see the same host noise.

Prints min / median / p95 / max per checkout and the ratio of medians
against the baseline.
"""
from __future__ import annotations

import argparse
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402
from event_rates import SEED, Agent  # noqa: E402


class Tail:
    """New bytes of a growing file."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def wait_for(self, needle: bytes, timeout: float) -> float | None:
        """time.time() when needle appeared after the current offset, or None."""
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            if self.path.exists():
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
                if chunk:
                    self.offset += len(chunk)
                    buf = buf[-len(needle):] + chunk
                    if needle in buf:
                        return time.time()
            time.sleep(0.001)
        return None


def one_exec(binary: pathlib.Path, tail: Tail) -> float | None:
    marker = f"th-latency-{uuid.uuid4().hex}"
    t0 = time.time()
    subprocess.run([str(binary), marker], check=True)
    seen = tail.wait_for(marker.encode(), 10.0)
    return None if seen is None else seen - t0


def main() -> int:
    c.require_root()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-repo", type=pathlib.Path, help="another checkout (built) to compare with")
    ap.add_argument("--execs", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between execs (default 0.5)")
    args = ap.parse_args()

    repos = {"this": c.REPO}
    if args.baseline_repo:
        repos["baseline"] = args.baseline_repo.resolve()
    work = c.tmpfs_dir("thlat-")
    binary = work / "th_latency_true"
    shutil.copy("/bin/true", binary)
    print(f"# Exec-to-export latency\n\n{c.machine_line()}; {args.execs} execs, {args.gap} s apart, "
          f"{len(SEED)} seed policies loaded\n")
    agents = {name: Agent(repo, work / name, SEED, journald=False) for name, repo in repos.items()}
    tails = {name: Tail(a.export) for name, a in agents.items()}
    lat: dict[str, list[float]] = {name: [] for name in agents}
    missed = {name: 0 for name in agents}
    try:
        for _ in range(args.execs):
            for name in agents:      # every agent sees every exec; each waits for its own line
                t = one_exec(binary, tails[name])
                if t is None:
                    missed[name] += 1
                else:
                    lat[name].append(t)
                time.sleep(random.uniform(0.5, 1.5) * args.gap)
    finally:
        for a in agents.values():
            a.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| checkout | execs seen | min ms | median ms | p95 ms | max ms | median vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(lat["baseline"]) if lat.get("baseline") else None
    for name, xs in lat.items():
        if not xs:
            print(f"| {name} | 0 of {args.execs} | | | | | |")
            continue
        xs.sort()
        p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
        med = statistics.median(xs)
        ratio = f"{med / base:.2f}x" if base else "-"
        print(f"| {name} | {len(xs)} of {args.execs} | {xs[0] * 1e3:.1f} | {med * 1e3:.1f} | {p95 * 1e3:.1f} "
              f"| {xs[-1] * 1e3:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
