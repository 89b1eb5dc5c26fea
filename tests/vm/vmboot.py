"""Boot one of Debian 12's kernels under QEMU with virtme-ng, from the host side.

The guest sees the host root read-only (9p) with writable overlays, so the
checkout and its venv are visible at the same paths inside. One host directory
is shared read-write (vng --rwdir): the guest scripts in tests/vm/guest/ leave
their results there (exit_code last, so its presence means "got to the end").
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(__file__).resolve().parent / "guest"
# Where the plain guest sees the results directory; must lie in one of
# virtme-ng's writable overlays (/tmp is one).
GUEST_RESULTS = "/tmp/tetrahost-vm-results"
# Where scripts/vm-setup.sh installs virtme-ng (same VNG_VENV override).
VNG_BIN_DIRS = (Path(os.environ.get("VNG_VENV", "/opt/vng"), "bin"),)
# Seconds of the host's --vm-timeout left for boot, dumps and power-off once
# the guest's own watchdog stops pytest.
GUEST_DEADLINE_MARGIN = 120
# Printed by the guest scripts once the guest is up: the boot time is taken there.
GUEST_UP_MARKER = "tetrahost-vm: guest up"
# Units masked in the systemd guest, from measuring its boot (journal
# timestamps) under TCG over the read-only 9p host root:
SYSTEMD_MASKS = (
    "getty@",  # the console is serial; vng masks it too, but systemd no longer sees vng's mask
    # Fails (no writable /var/lib) and restarts five times: ~1.5 s.
    "systemd-timesyncd.service",
    # Walks and tries to clean the host's /tmp over 9p (read-only: harmless
    # but ~6 s, and growing with the host's /tmp); systemd_entry.sh reruns
    # its --create part without /tmp.
    "systemd-tmpfiles-setup.service",
    # apt-daily, man-db, fstrim... must not start under basic.target.
    "timers.target",
)


class SetupError(RuntimeError):
    """The host lacks something the harness needs; the message says what to do."""


# The kernels of the matrix (Debian 12's own packages, scripts/vm-setup.sh):
# name -> (glob in /boot, what the file name must not contain).
KERNELS = {
    "6.1": ("vmlinuz-6.1.*-amd64", ("-rt-", "-cloud-")),
    "6.12": ("vmlinuz-6.12.*-amd64", ("-rt-", "-cloud-")),
    "6.1-rt": ("vmlinuz-6.1.*-rt-amd64", ()),
    "6.12-rt": ("vmlinuz-6.12.*-rt-amd64", ()),
}


def find_kernel(name: str = "6.1") -> Path:
    """Newest /boot kernel of the matrix entry NAME (the version differs between machines)."""

    def version(path: Path) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", path.name)]

    if name not in KERNELS:
        raise SetupError(f"unknown guest kernel {name!r}: one of {', '.join(KERNELS)}")
    pattern, excluded = KERNELS[name]
    kernels = sorted((k for k in Path("/boot").glob(pattern) if not any(x in k.name for x in excluded)), key=version)
    if not kernels:
        raise SetupError(f"no Debian {name} kernel in /boot ({pattern}): run scripts/vm-setup.sh")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    if not Path("/lib/modules", release).is_dir():
        raise SetupError(f"{kernel} has no /lib/modules/{release}: run scripts/vm-setup.sh")
    return kernel


def find_vng() -> Path:
    for directory in VNG_BIN_DIRS:
        if (directory / "vng").is_file():
            return directory / "vng"
    found = shutil.which("vng")
    if found:
        return Path(found)
    raise SetupError("virtme-ng (vng) is not installed: run scripts/vm-setup.sh")


@dataclass
class VmOptions:
    results: Path  # host directory shared read-write with the guest
    timeout: float  # seconds for the whole run, boot included
    memory: str = "2G"
    cpus: int = 2
    append: tuple[str, ...] = ()   # extra kernel parameters (e.g. an lsm= list)
    label: str = "6.1"             # the matrix entry, for the guest's tests (TETRAHOST_VM_KERNEL)
    # TCG threading: "single" runs all vCPUs in one host thread, in turn;
    # "multi" (QEMU's default) a thread per vCPU.  Single, because under
    # multi-threaded TCG the 6.12 guest twice died of an "Oops: int3" in
    # __schedule, at a jump label being patched (the guest kernel's
    # cross-CPU code patching raced the emulator's translated code): an
    # emulator artifact that a run in one thread cannot hit.  The guest keeps
    # two CPUs (preemption and migration between them still happen), and
    # on this 2-core machine the suite was no slower (6.12: 338 s vs 458 s
    # with the host busy).  TETRAHOST_VM_TCG=multi for the other.
    tcg: str = os.environ.get("TETRAHOST_VM_TCG", "single")


# What a plain run runs: the VM suite, the host's kernel suite, or the lean
# enforcement subset of the VM suite (the matrix's lighter kernels).
# Behaviour tests of tests/kernel that every guest runs too: they expect what
# the probed features allow, so they hold on any kernel (the whole of
# tests/kernel, about 30 minutes a guest, is too slow under emulation for CI: `make
# test-vm-kernel-all KERNEL=6.1|6.12` runs it).
# The lean subset's share of them (the enforcement behaviour: exec blocking,
# the process selectors, one selector of each kind); the full VM suite runs them all.
KERNEL_BEHAVIOUR_LEAN = ("tests/kernel/test_deep_paths.py", "tests/kernel/test_file_open_hooks.py",
                         "tests/kernel/test_syscall_dispatch.py", "tests/kernel/test_seed_policies_host.py",
                         "tests/kernel/test_policy_selectors.py", "tests/kernel/test_exec_hook_binaries.py")
KERNEL_BEHAVIOUR = (*KERNEL_BEHAVIOUR_LEAN,
                    "tests/kernel/test_verifier_budget.py", "tests/kernel/test_probe.py",
                    "tests/kernel/test_syscall_lists_host.py", "tests/kernel/test_policy_dir.py",
                    "tests/kernel/test_return_probes_host.py")
# Policy features beyond the lean subset's (the seed policies, Override, a
# selector of each kind): the full suites of the generic kernels run them.
POLICY_COVERAGE = ("tests/kernel/test_uprobes_host.py", "tests/kernel/test_usdt_host.py",
                   "tests/kernel/test_many_values.py", "tests/kernel/test_kobj_args_kernel.py",
                   "tests/kernel/test_syscall_abi_host.py", "tests/kernel/test_stack_traces_host.py",
                   "tests/kernel/test_resolve_host.py", "tests/kernel/test_uprobe_replaced_binary.py",
                   "tests/kernel/test_ima_hash_kernel.py")
SUITES = {
    "vm": ("tests/vm", *KERNEL_BEHAVIOUR, *POLICY_COVERAGE),
    "kernel": ("tests/kernel",),
    "lean": ("tests/vm/test_policy_hooks_vm.py", "tests/vm/test_guest_kernel.py", *KERNEL_BEHAVIOUR_LEAN),
}


def plain_command(opts: VmOptions, kernel: Path, vng: Path, pytest_args: list[str], suite: str = "vm") -> list[str]:
    """vng command that boots once and runs pytest on SUITE (SUITES) in the guest."""
    # The guest stops a stalled pytest itself, with stacks dumped, before
    # the host's timeout kills the VM and everything in it unexplained.
    deadline = max(60, int(opts.timeout - GUEST_DEADLINE_MARGIN))
    # test files or directories among the arguments replace the suite's paths
    paths = [a for a in pytest_args if not a.startswith("-") and (REPO / a.split("::")[0]).exists()]
    rest = [a for a in pytest_args if a not in paths]
    guest_cmd = shlex.join(
        [str(GUEST_DIR / "run_pytest.sh"), GUEST_RESULTS, str(REPO), str(deadline), opts.label,
         ":".join(paths or SUITES[suite]), *rest]
    )
    return [
        *_common_args(opts, kernel, vng),
        f"--rwdir={GUEST_RESULTS}={opts.results}",
        "--exec",
        guest_cmd,
    ]


def systemd_command(opts: VmOptions, kernel: Path, vng: Path, scenario: Path) -> list[str]:
    """vng command that boots systemd as PID 1 and runs SCENARIO as a unit.

    Leaves SCENARIO's path in the results directory, where the guest reads it.
    """
    (opts.results / "scenario_path").write_text(f"{scenario}\n")
    systemd_args = [
        f"systemd.run={GUEST_DIR / 'systemd_entry.sh'}",
        "systemd.run_success_action=poweroff-force",
        "systemd.run_failure_action=poweroff-force",
        "systemd.show_status=error",
        "luks=no",
        "systemd.zram=0",
        *(f"systemd.mask={unit}" for unit in SYSTEMD_MASKS),
        # For debugging a slow or failing boot, e.g. systemd.log_level=debug.
        *shlex.split(os.environ.get("TETRAHOST_VM_SYSTEMD_ARGS", "")),
    ]
    return [
        *_common_args(opts, kernel, vng),
        "--systemd",
        # systemd_entry.sh mounts it by tag; the guest path only satisfies vng.
        f"--rwdir={GUEST_RESULTS}={opts.results}",
        # The host root holds /.dockerenv, so systemd would take the guest for
        # a Docker container and read its settings from PID 1's argv instead of
        # the kernel command line. An empty $container (passed by the kernel to
        # PID 1's environment) says "no container" to PID 1...
        "--append=container=",
        # ...but its generators, not PID 1, then still read the empty value from
        # /proc/1/environ and say "container": so hand everyone the systemd
        # settings through the override that systemd checks first. (Processes
        # other than PID 1, systemd-detect-virt included, still say
        # "container-other": nothing but removing /.dockerenv fixes that.)
        # vng shell-splits --append values: quote it to keep it one parameter.
        "--append=" + shlex.quote("SYSTEMD_PROC_CMDLINE=" + " ".join(systemd_args)),
    ]


def _common_args(opts: VmOptions, kernel: Path, vng: Path) -> list[str]:
    return [
        str(vng),
        "--run",
        str(kernel),
        # Nested KVM hangs at boot on these machines: emulate (TCG).
        "--disable-kvm",
        # The kernel console (vng sends it to /dev/null unless verbose), at
        # error level: OOM kills, RCU stalls, hung tasks and lockups reach
        # the host's output even when the guest wedges and leaves nothing
        # else. (vng's own loglevel=7 comes first: the last one counts.)
        "--verbose",
        "--append=loglevel=4",
        # No Rust virtiofsd here (Debian 12 has none): vng polls for one up to
        # ~3 s at every boot before it falls back to 9p.
        "--force-9p",
        *(f"--append={shlex.quote(param)}" for param in opts.append),
        *(["--qemu-opts=-accel tcg,thread=single"] if opts.tcg == "single" else []),
        "--memory",
        opts.memory,
        "--cpus",
        str(opts.cpus),
    ]


@dataclass
class BootResult:
    returncode: int | None  # of vng; None when killed on timeout
    timed_out: bool
    boot_seconds: float | None  # launch until the guest printed GUEST_UP_MARKER
    total_seconds: float
    boot_hung: bool = False  # killed because the guest never came up (BOOT_TIMEOUT)


# Seconds the guest may take to come up (GUEST_UP_MARKER); a plain boot
# takes ~10-25 s under TCG, the systemd guest ~60 s.  Now and then a TCG
# guest never comes up (QEMU busy, no guest after minutes; seen here and,
# we believe, in a CI run that lost 20 minutes to it): such a boot is
# killed and retried by run.py, since no test has run yet, and its console
# is kept (boot-hang-N.log) for the reason.
BOOT_TIMEOUT = 240


def run_vm(command: list[str], vng: Path, timeout: float, console: Path | None = None,
           boot_timeout: float = BOOT_TIMEOUT) -> BootResult:
    """Run COMMAND, echo its output live (and into CONSOLE), kill the whole
    VM after TIMEOUT s, or after BOOT_TIMEOUT s if the guest is not up by then."""
    env = dict(os.environ)
    # vng execs virtme-run and friends by name from the same venv.
    env["PATH"] = f"{vng.parent}{os.pathsep}{env.get('PATH', '')}"
    start = time.monotonic()
    up_at: list[float] = []
    came_up = threading.Event()
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        # No terminal for QEMU's stdio console: it must not read ours.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Own process group, so a timeout kills vng, virtme-run and QEMU at once.
        start_new_session=True,
    )
    reader = threading.Thread(target=_echo, args=(proc.stdout, up_at, console, came_up), daemon=True)
    reader.start()
    timed_out = boot_hung = False
    try:
        # up, or exited (the reader sees EOF and sets came_up too), or hung at boot
        if not came_up.wait(timeout=min(boot_timeout, timeout)) and proc.poll() is None:
            boot_hung = True
            print(f"\ntetrahost-vm: the guest did not come up in {boot_timeout:.0f} s, killing the VM",
                  flush=True)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        timed_out = True
        print(f"\ntetrahost-vm: timeout after {timeout:.0f} s, killing the VM", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    reader.join(timeout=5)
    return BootResult(
        returncode=None if timed_out or boot_hung else proc.returncode,
        timed_out=timed_out,
        boot_seconds=up_at[0] - start if up_at else None,
        total_seconds=time.monotonic() - start,
        boot_hung=boot_hung,
    )


def _echo(stream, up_at: list[float], console: Path | None, came_up: threading.Event) -> None:
    """Echo the VM's output live.  Until the guest is up it is held back
    (vng's virtiofsd attempts, the early kernel console) and shown only if
    the guest never comes up, where it is what tells why.  CONSOLE gets
    every line: the end of a wedged run is read back from it (run.py)."""
    booting: list[str] = []
    keep = console.open("w", encoding="utf-8") if console else None
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        if keep:
            keep.write(line)
            keep.flush()
        if not up_at:
            if GUEST_UP_MARKER not in line:
                booting.append(line)
                continue
            up_at.append(time.monotonic())
            came_up.set()
        sys.stdout.write(line)
        sys.stdout.flush()
    came_up.set()   # end of output: nothing more to wait for
    if not up_at:
        sys.stdout.write("".join(booting))
        sys.stdout.flush()
    if keep:
        keep.close()
