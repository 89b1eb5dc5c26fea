#!/usr/bin/env python3
"""The kernel matrix: one guest boot per kernel configuration, one after the other.

  .venv/bin/python tests/vm/matrix.py [--results DIR] [--only NAME...] [--doc docs/kernel-matrix.md]

Entries (ENTRIES): Debian 12's 6.1 and 6.12 run the full VM suite; 6.1 with
an lsm= list that leaves out bpf (BPF-LSM built in but inactive, as on most
distributions) and the PREEMPT_RT 6.1 kernel run the lean enforcement subset
(the seed policies, Override, one selector of each kind).  Each entry fails on
a failed or skipped test and on any kernel WARNING/BUG in the guest's dmesg
(tests/vm/run.py).  DIR/NAME/ keeps each run's results and its run.json;
DIR/matrix.json the durations and verdicts of every entry found there (entries
run by other invocations at the same time too: CI runs them side by side,
scripts/ci_lanes.py), from which kernel_matrix_doc.py writes the README table.
--collect runs nothing and only rebuilds matrix.json (and --doc).
Exit 1 if any entry failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass(frozen=True)
class Entry:
    name: str          # directory and table column
    kernel: str        # vmboot.KERNELS key
    suite: str         # vmboot.SUITES key
    lsm: str = ""      # lsm= boot parameter, "" = the kernel's default list
    what: str = ""


ENTRIES = (
    Entry("6.1", "6.1", "vm", what="Debian 12 stock kernel: kprobes, fentry, BPF-LSM active"),
    Entry("6.12", "6.12", "vm", what="Debian 12's 6.12 LTS: newer verifier (checks LSM return values)"),
    Entry("6.1-nobpflsm", "6.1", "lean", lsm="lockdown,capability,yama,apparmor",
          what="6.1 booted with an lsm= list without bpf: BPF-LSM built in, inactive"),
    Entry("6.1-rt", "6.1-rt", "lean", what="Debian 12's PREEMPT_RT 6.1 kernel"),
)


def run_entry(entry: Entry, results: Path, timeout: float) -> dict:
    out = results / entry.name
    cmd = [sys.executable, str(HERE / "run.py"), "--kernel", entry.kernel, "--suite", entry.suite,
           "--vm-results", str(out), "--vm-timeout", str(timeout)]
    if entry.lsm:
        cmd += ["--lsm", entry.lsm]
    print(f"==== matrix {entry.name}: {entry.what} ({entry.suite} suite)", flush=True)
    started = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    seconds = time.monotonic() - started
    print(f"==== matrix {entry.name}: {'PASS' if rc == 0 else 'FAIL'} in {seconds:.0f} s", flush=True)
    run = {**asdict(entry), "exit": rc, "seconds": round(seconds, 1), "results": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


def finished_runs(results: Path) -> list[dict]:
    """Every entry's run.json under RESULTS, in ENTRIES order."""
    runs = []
    for entry in ENTRIES:
        try:
            runs.append(json.loads((results / entry.name / "run.json").read_text()))
        except (OSError, ValueError):
            continue
    return runs


def write_matrix_json(results: Path, host: dict) -> None:
    tmp = results / f".matrix.json.{os.getpid()}"
    tmp.write_text(json.dumps([host, *finished_runs(results)], indent=2) + "\n")
    os.replace(tmp, results / "matrix.json")      # side-by-side invocations: whole files only


def collect_host(out: Path) -> dict:
    """The machine's own kernel as a column of the table: what it offers and
    how the seeds attach (its tests are `make test-host`, not run here)."""
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "tetrahost.cli.main"]
    seeds = sorted((REPO.parent / "shared" / "conformance" / "seed-policies").glob("*.yaml"))
    (out / "release.txt").write_text(os.uname().release + "\n")
    try:
        (out / "lsm.txt").write_text(Path("/sys/kernel/security/lsm").read_text() + "\n")
    except OSError:
        pass
    for name, args in (("probe.json", ["probe", "-o", "json"]),
                       ("seeds.json", ["policy", "check", "-o", "json", *map(str, seeds)])):
        proc = subprocess.run(cli + args, cwd=REPO, capture_output=True, text=True)
        (out / name).write_text(proc.stdout)
    return {"name": "host", "kernel": "host", "suite": "host", "lsm": "", "exit": None, "seconds": 0,
            "what": "this machine's kernel (tested by make test-host)", "results": str(out)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "build" / "vm-matrix")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="run these entries only")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="per entry, boot included (a full suite takes 12-20 min under TCG beside another guest)")
    parser.add_argument("--doc", type=Path, help="also write the markdown table here (kernel_matrix_doc.py)")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: rebuild matrix.json (and --doc) from the entries' run.json")
    args = parser.parse_args(argv)
    entries = [e for e in ENTRIES if not args.only or e.name in args.only]
    unknown = set(args.only or ()) - {e.name for e in ENTRIES}
    if unknown:
        print(f"matrix: unknown entries {sorted(unknown)}; known: {[e.name for e in ENTRIES]}", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    host = collect_host(args.results / "host")
    runs: list[dict] = []
    if args.collect:
        entries, runs = [], finished_runs(args.results)
        write_matrix_json(args.results, host)
    for entry in entries:      # matrix.json after each entry: a stopped matrix still has a table
        stale = args.results / entry.name / "run.json"
        stale.unlink(missing_ok=True)
        runs.append(run_entry(entry, args.results, args.timeout))
        write_matrix_json(args.results, host)
    print("\n==== kernel matrix ====")
    for r in runs:
        print(f"{r['name']:14} {r['suite']:5} {'PASS' if r['exit'] == 0 else 'FAIL'}  {r['seconds']:7.1f} s")
    print(f"total {sum(r['seconds'] for r in runs):.0f} s")
    for r in runs:     # the reasons again, at the end where a CI log's tail shows them
        verdict = Path(r["results"]) / "verdict.txt"
        if r["exit"] != 0 and verdict.is_file():
            print(f"\n---- {r['name']}: " + verdict.read_text(errors="replace").rstrip())
    if args.doc:
        import kernel_matrix_doc
        args.doc.write_text(kernel_matrix_doc.render(args.results))
        print(f"wrote {args.doc}")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
