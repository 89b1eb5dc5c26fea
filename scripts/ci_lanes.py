#!/usr/bin/env python3
"""Run every test job CI runs, side by side on this machine's cores (`make test`).

  .venv/bin/python scripts/ci_lanes.py [--lanes N] [--only JOB...] [--logs DIR]

Why side by side: a guest under QEMU without KVM is one emulated CPU in one
host thread (tests/vm: single-threaded TCG), so one after the other the jobs
leave a core idle for most of the run (53 minutes on a 2-core machine).  With
one lane per core the guests of the kernel matrix, the systemd guests and the
host suite share the machine; the longest jobs start first (their expected
minutes below are scheduling hints measured on a 2-core machine, not limits).

Each job's output goes to DIR/JOB.log and is printed whole when the job ends,
so jobs do not interleave in the CI log; the summary at the end repeats each
failed job's last lines.  Exit 1 if any job failed.  After the matrix entries,
the kernel-matrix table is written from their results
(build/vm-matrix/kernel-matrix.md).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = os.environ.get("PY", ".venv/bin/python")
MATRIX = [PY, "tests/vm/matrix.py", "--results", "build/vm-matrix"]


@dataclass(frozen=True)
class Job:
    name: str
    minutes: float          # expected duration: longest first
    argv: tuple[str, ...]


JOBS = (
    Job("vm-6.1", 12, (*MATRIX, "--only", "6.1")),
    Job("vm-6.12", 12, (*MATRIX, "--only", "6.12")),
    Job("host", 9, ("make", "--no-print-directory", "test-host")),
    Job("packaging", 8, ("make", "--no-print-directory", "test-packaging")),
    Job("vm-6.1-rt", 4, (*MATRIX, "--only", "6.1-rt")),
    Job("systemd", 4, ("make", "--no-print-directory", "test-vm-systemd")),
    Job("vm-6.1-nobpflsm", 3.5, (*MATRIX, "--only", "6.1-nobpflsm")),
)


@dataclass
class Outcome:
    job: Job
    exit: int
    seconds: float
    log: Path


def run_job(job: Job, logs: Path) -> Outcome:
    log = logs / f"{job.name}.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        rc = subprocess.run(job.argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
    return Outcome(job, rc, time.monotonic() - started, log)


def run_lanes(jobs: list[Job], lanes: int, logs: Path) -> list[Outcome]:
    pending = sorted(jobs, key=lambda j: -j.minutes)
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def lane() -> None:
        while True:
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
                print(f"==== start {job.name}: {' '.join(job.argv)}", flush=True)
            outcome = run_job(job, logs)
            with lock:     # one job's whole log at a time
                outcomes.append(outcome)
                sys.stdout.write(outcome.log.read_text(errors="replace"))
                print(f"==== {job.name}: {'PASS' if outcome.exit == 0 else f'FAIL (exit {outcome.exit})'} "
                      f"in {outcome.seconds:.0f} s", flush=True)

    threads = [threading.Thread(target=lane) for _ in range(max(1, lanes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=os.cpu_count() or 1, help="jobs at a time (default: cores)")
    parser.add_argument("--only", nargs="*", metavar="JOB", help=f"these jobs only: {[j.name for j in JOBS]}")
    parser.add_argument("--logs", type=Path, default=REPO / "build" / "ci")
    args = parser.parse_args(argv)
    unknown = set(args.only or ()) - {j.name for j in JOBS}
    if unknown:
        parser.error(f"unknown jobs {sorted(unknown)}")
    jobs = [j for j in JOBS if not args.only or j.name in args.only]
    args.logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcomes = run_lanes(jobs, args.lanes, args.logs)
    wall = time.monotonic() - started
    if any(j.name.startswith("vm-") for j in jobs):
        subprocess.run([*MATRIX, "--collect", "--doc", "build/vm-matrix/kernel-matrix.md"], cwd=REPO,
                       stdout=subprocess.DEVNULL)
    print(f"\n==== CI jobs, {args.lanes} lane(s) ====")
    for o in sorted(outcomes, key=lambda o: o.job.name):
        print(f"{o.job.name:16} {'PASS' if o.exit == 0 else 'FAIL'}  {o.seconds:6.0f} s")
    print(f"wall {wall:.0f} s; the jobs' sum {sum(o.seconds for o in outcomes):.0f} s")
    failed = [o for o in outcomes if o.exit != 0]
    for o in failed:       # the reasons again, at the end where a CI log's tail shows them
        tail = o.log.read_text(errors="replace").splitlines()[-25:]
        print(f"\n---- {o.job.name} (exit {o.exit}), last lines of {o.log}:\n" + "\n".join(tail))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
