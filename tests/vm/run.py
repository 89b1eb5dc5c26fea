#!/usr/bin/env python3
"""Run the real-kernel tests in a Debian 12 guest (QEMU + virtme-ng).

  .venv/bin/python tests/vm/run.py [--kernel 6.1|6.12|6.1-rt] [--lsm LIST] [--suite vm|kernel|lean] [pytest args...]
      boots the guest once and runs `pytest tests/vm -m vm` (or the chosen suite) in it.
  .venv/bin/python tests/vm/run.py --systemd tests/vm/scenarios/NAME.sh
      boots the guest with systemd as PID 1 and journald, runs the scenario
      script (bash) as a unit, and powers off.

Fails (exit 1) when pytest or the scenario fails, when the guest reports no
result (boot failure, timeout), or when the guest's dmesg shows a kernel
warning, BUG, oops or call trace. Exit 2: the host lacks something (the
message says what). See tests/vm/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import vmboot
import vmreport

# A guest that never comes up ran no test: boot it again, this many times in all.
BOOT_ATTEMPTS = 3
RESULT_FILES = ("exit_code", "junit.xml", "dmesg.txt", "scenario.log", "journal.txt", "failed-units.txt",
                "snapshot.txt", "agent-logs.txt", "release.txt", "lsm.txt", "probe.json", "seeds.json",
                "console.log", "verdict.txt")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Run tests/vm in a Debian 6.1 QEMU guest; other arguments go to pytest.",
        allow_abbrev=False,  # so pytest's options are never taken for ours
    )
    parser.add_argument("--systemd", metavar="SCENARIO", type=Path,
                        help="boot systemd as PID 1 and run this bash script instead of pytest")
    parser.add_argument("--vm-timeout", type=float, default=20 * 60, metavar="SECONDS",
                        help="kill the VM after this long, boot included (default: 1200)")
    parser.add_argument("--vm-results", type=Path, metavar="DIR",
                        help="keep the guest's results here (default: a new /tmp/tetrahost-vm-* directory)")
    parser.add_argument("--vm-memory", default="2G", help="guest memory (default: 2G)")
    parser.add_argument("--vm-cpus", type=int, default=2, help="guest vCPUs (default: 2)")
    parser.add_argument("--kernel", default="6.1", choices=sorted(vmboot.KERNELS),
                        help="which Debian 12 kernel to boot (default: 6.1)")
    parser.add_argument("--lsm", metavar="LIST",
                        help="boot with lsm=LIST (e.g. without bpf: BPF-LSM built in but inactive)")
    parser.add_argument("--suite", default="vm", choices=sorted(vmboot.SUITES),
                        help="vm: tests/vm (default); kernel: the host's tests/kernel, in the guest; "
                             "lean: the enforcement subset of tests/vm")
    return parser.parse_known_args(argv)


def prepare_results(path: Path | None) -> Path:
    if path is None:
        return Path(tempfile.mkdtemp(prefix="tetrahost-vm-"))
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:  # a stale exit_code would pass for this run's
        (path / name).unlink(missing_ok=True)
    for stale in path.glob("boot-hang-*.log"):
        stale.unlink()
    return path


def main(argv: list[str]) -> int:
    args, pytest_args = parse_args(argv)
    try:
        kernel = vmboot.find_kernel(args.kernel)
        vng = vmboot.find_vng()
    except vmboot.SetupError as err:
        print(f"tetrahost-vm: {err}", file=sys.stderr)
        return 2
    if args.systemd is not None:
        if pytest_args:
            print(f"tetrahost-vm: --systemd takes no pytest arguments: {pytest_args}", file=sys.stderr)
            return 2
        scenario = args.systemd.resolve()
        if not scenario.is_file():
            print(f"tetrahost-vm: no scenario script {scenario}", file=sys.stderr)
            return 2

    results = prepare_results(args.vm_results)
    opts = vmboot.VmOptions(results=results, timeout=args.vm_timeout, memory=args.vm_memory, cpus=args.vm_cpus,
                            append=(f"lsm={args.lsm}",) if args.lsm else (), label=args.kernel)
    if args.systemd is not None:
        what = f"systemd scenario {scenario}"
        command = vmboot.systemd_command(opts, kernel, vng, scenario)
    else:
        what = f"pytest ({args.suite} suite) " + " ".join(pytest_args)
        command = vmboot.plain_command(opts, kernel, vng, pytest_args, args.suite)

    print(f"tetrahost-vm: booting {kernel.name}{' lsm=' + args.lsm if args.lsm else ''} (TCG, {opts.cpus} vCPUs, {opts.memory}) for {what}", flush=True)
    started = time.monotonic()
    console = results / "console.log"
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        boot = vmboot.run_vm(command, vng, opts.timeout - (time.monotonic() - started), console=console)
        if not boot.boot_hung or attempt == BOOT_ATTEMPTS:
            break
        kept = console.rename(results / f"boot-hang-{attempt}.log") if console.is_file() else None
        print(f"tetrahost-vm: boot attempt {attempt} hung (console: {kept}); booting again", flush=True)
    return report(boot, results, systemd=args.systemd is not None, wall=time.monotonic() - started,
                  suite=args.suite)


def report(boot: vmboot.BootResult, results: Path, systemd: bool, wall: float, suite: str = "vm") -> int:
    """Print the summary; return the runner's exit code."""
    problems = []
    exit_code = vmreport.read_exit_code(results)
    trouble = vmreport.kernel_trouble(results)
    junit = None if systemd else vmreport.junit_counts(results)

    if boot.boot_hung:
        problems.append(f"the guest did not come up in {vmboot.BOOT_TIMEOUT} s, {BOOT_ATTEMPTS} times")
    elif boot.timed_out:
        problems.append(f"timeout: the VM was killed after {boot.total_seconds:.0f} s (--vm-timeout)")
    elif exit_code is None:
        problems.append(f"the guest reported no result (vng exit {boot.returncode}): "
                        "it did not boot or crashed, see the output above")
    elif exit_code != 0:
        problems.append(f"{'scenario' if systemd else 'pytest'} exited with {exit_code}")
    if not systemd and exit_code == 0:
        # a VM test that skips in the guest proves nothing: the guest is where it must run
        if junit is None or junit.tests == 0:
            problems.append("pytest ran no test in the guest (no junit.xml, or an empty one)")
        elif junit.skipped > junit.not_applicable:
            # only what this kernel lacks may skip ("not applicable on this kernel")
            problems.append(f"{junit.skipped - junit.not_applicable} test(s) skipped in the guest, "
                            "where every one must run")
    if trouble:
        problems.append(f"the guest kernel logged {len(trouble)} warning/BUG/oops line(s)")

    boot_text = f"{boot.boot_seconds:.1f} s" if boot.boot_seconds is not None else "guest never came up"
    print("\n==== tetrahost VM summary ====")
    print(f"mode:     {'systemd scenario' if systemd else 'pytest'}")
    print(f"boot:     {boot_text} (launch until the guest ran our script)")
    print(f"total:    {wall:.1f} s")
    print(f"result:   {'none' if exit_code is None else f'exit {exit_code}'}")
    if junit is not None:
        print(f"tests:    {junit}")
        for name in junit.failed_names:
            print(f"  failed: {name}")
    if trouble is None:
        print("dmesg:    not collected")
    elif trouble:
        print("dmesg:    kernel trouble:")
        for line in trouble:
            print(f"  {line}")
    else:
        print("dmesg:    clean")
    print(f"results:  {results}")
    if problems:
        show_stall_evidence(results)
        print("verdict:  FAIL: " + "; ".join(problems))
        write_verdict(results, problems, junit, trouble, wedged=boot.timed_out or boot.boot_hung or exit_code is None)
        return 1
    print("verdict:  PASS")
    (results / "verdict.txt").write_text("PASS\n")
    return 0


def write_verdict(results: Path, problems: list[str], junit, trouble: list[str] | None, wedged: bool) -> None:
    """A short account of a failed run in verdict.txt, which the kernel
    matrix repeats at its end: CI logs keep only their tail, so the reason
    must be there, not only in the run's own output far above."""
    lines = ["FAIL: " + "; ".join(problems)]
    lines += [f"  failed: {name}" for name in (junit.failed_names if junit else [])]
    lines += [f"  dmesg: {line}" for line in (trouble or [])[:8]]
    if wedged:   # where the guest was when it stopped answering
        console = results / "console.log"
        tail = console.read_text(errors="replace").splitlines()[-30:] if console.is_file() else []
        lines += ["  last console lines:", *(f"    {line}" for line in tail)]
    (results / "verdict.txt").write_text("\n".join(lines) + "\n")


def show_stall_evidence(results: Path) -> None:
    """What the guest's watchdog saw last (run_pytest.sh): busy and blocked
    processes with their kernel stacks, and the end of dmesg. The agents'
    logs, when it stopped a stalled run, are in agent-logs.txt."""
    snapshot = results / "snapshot.txt"
    if snapshot.is_file():
        print("---- guest processes at the last watchdog snapshot ----")
        print(snapshot.read_text(errors="replace").rstrip())
    dmesg = results / "dmesg.txt"
    if dmesg.is_file():
        print("---- end of the guest's dmesg ----")
        print("\n".join(dmesg.read_text(errors="replace").splitlines()[-60:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
