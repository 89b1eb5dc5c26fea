#!/usr/bin/env python3
"""Cost of many syscall-fallback hooks on syscalls they do NOT hook.

    sudo .venv/bin/python bench/syscall_hooks_scaling.py                         # ~1 min
    sudo .venv/bin/python bench/syscall_hooks_scaling.py --baseline-repo ../base  # + another checkout

A getppid storm (a C loop timing itself) runs bare, then under the agent with
1 and with 100 syscall hooks on other syscalls (4 policies of 25 hooks; each
selector is a matchPIDs no process has, so nothing is ever posted), with
kprobes and fentry avoided so the hooks go through the raw_syscalls sys_enter
fallback on any kernel.  Printed: ns per getppid and the ratio to bare, for
this checkout and, with --baseline-repo, another one in the same run (before
the dispatcher every hook was its own program on sys_enter).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402

STORM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""
# Syscalls hardly any process makes while the storm runs (hooking one that is
# called would measure event work, not the non-matching path).
RARE = ["acct", "adjtimex", "syslog", "swapon", "swapoff", "reboot", "sethostname", "setdomainname",
        "iopl", "ioperm", "init_module", "delete_module", "quotactl", "lookup_dcookie", "kexec_load",
        "kexec_file_load", "add_key", "request_key", "keyctl", "ioprio_set", "ioprio_get", "migrate_pages",
        "mbind", "set_mempolicy", "get_mempolicy", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedreceive", "mq_notify", "mq_getsetattr", "vmsplice", "move_pages", "tee", "splice",
        "sync_file_range", "signalfd", "timerfd_create", "eventfd", "fallocate", "timerfd_settime",
        "timerfd_gettime", "signalfd4", "eventfd2", "inotify_init1", "preadv", "pwritev",
        "rt_tgsigqueueinfo", "perf_event_open", "recvmmsg", "fanotify_init", "fanotify_mark",
        "name_to_handle_at", "open_by_handle_at", "clock_adjtime", "syncfs", "sendmmsg", "setns",
        "process_vm_readv", "process_vm_writev", "kcmp", "finit_module", "sched_setattr",
        "sched_getattr", "renameat2", "seccomp", "memfd_create", "bpf", "userfaultfd", "membarrier",
        "mlock2", "copy_file_range", "preadv2", "pwritev2", "pkey_mprotect", "pkey_alloc", "pkey_free",
        "io_pgetevents", "pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "pidfd_open", "clone3",
        "close_range", "pidfd_getfd", "process_madvise", "epoll_pwait2", "mount_setattr",
        "quotactl_fd", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        "memfd_secret", "process_mrelease", "futex_waitv", "set_mempolicy_home_node", "pivot_root",
        "chroot", "vhangup", "modify_ldt", "personality", "ustat", "sysfs"]
AVOID = "kprobe,kretprobe,kprobe_multi,fentry,fexit,fmod_ret,lsm"


def policies(work: pathlib.Path, count: int) -> list[pathlib.Path]:
    files = []
    names = RARE[:count]
    for p in range(0, count, 25):
        hooks = "".join(f"  - call: sys_{name}\n    syscall: true\n    selectors:\n"
                        f"    - matchPIDs:\n      - operator: In\n        values: [999999]\n"
                        for name in names[p:p + 25])
        path = work / f"hooks{p}.yaml"
        path.write_text("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n"
                        f"  name: scaling-{p}\nspec:\n  kprobes:\n{hooks}")
        files.append(path)
    return files


def storm_ns(storm: pathlib.Path, calls: int) -> float:
    return float(subprocess.run([str(storm), str(calls)], check=True, capture_output=True, text=True).stdout)


def with_agent(repo: pathlib.Path, files, storm, calls, work) -> float:
    """ns per getppid while repo's agent runs with the policy files; None if it did not load them all."""
    (work / "policies.d").mkdir(exist_ok=True)
    conf = work / "tetrahost.toml"
    conf.write_text(f'[agent]\npolicy_dir = "{work}/policies.d"\n[metrics]\nenabled = false\n')
    log = work / "agent.log"
    args = [arg for f in files for arg in ("--policy", str(f))]
    agent = subprocess.Popen([sys.executable, "-m", "tetrahost.cli.main", "run", "--no-stdout", "--no-socket",
                              "--no-journald", "--config", str(conf), "--export-file", str(work / "ev.json"), *args],
                             cwd=repo, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                             env={**c.os.environ, "TETRAHOST_AVOID_FEATURES": AVOID, "TETRAHOST_POLICY_SPARES": "0"})
    try:
        c.wait_until(lambda: "tetrahost ready" in log.read_text() or agent.poll() is not None, 300)
        text = log.read_text()
        if agent.poll() is not None or "not active" in text or "error" in text.lower():
            raise SystemExit(f"{repo}: the agent did not load every hook:\n{text[-2000:]}")
        return storm_ns(storm, calls)
    finally:
        agent.terminate()
        agent.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-repo", type=pathlib.Path, help="another built checkout, measured in the same run")
    ap.add_argument("--calls", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hooks", default="1,100", help="hook counts to measure (default 1,100)")
    args = ap.parse_args()
    c.require_root()
    work = pathlib.Path(tempfile.mkdtemp(prefix="thscale-"))
    storm = work / "storm"
    (work / "storm.c").write_text(STORM_C)
    subprocess.run(["gcc", "-O2", "-o", str(storm), str(work / "storm.c")], check=True)
    repos = {"this checkout": c.REPO}
    if args.baseline_repo:
        repos["baseline " + str(args.baseline_repo)] = args.baseline_repo.resolve()
    counts = [int(n) for n in args.hooks.split(",")]
    bare = statistics.median(storm_ns(storm, args.calls) for _ in range(args.rounds))
    print(c.machine_line())
    print(f"getppid, median of {args.rounds} x {args.calls:,} calls: bare {bare:.1f} ns")
    print("| agent | hooks | ns per getppid | vs bare |\n|---|---:|---:|---:|")
    for label, repo in repos.items():
        for n in counts:
            ns = statistics.median(with_agent(repo, policies(work, n), storm, args.calls, work)
                                   for _ in range(args.rounds))
            print(f"| {label} | {n} | {ns:.1f} | {ns / bare:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
