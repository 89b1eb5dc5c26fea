#!/usr/bin/env python3
"""Connect-storm overhead of a tcp-connect policy, and BPF time per connect.

    sudo .venv/bin/python bench/connect_storm.py                 # this kernel
    sudo .venv/bin/python bench/connect_storm.py --hook kprobe   # where kprobes exist (Debian 6.1 guest)

Workload: a C loop of socket + connect(127.0.0.1:port) + accept + close
(SO_LINGER 0, so no TIME_WAIT piles up), single-threaded, on loopback.

Configurations, interleaved and rotated each round (median reported):
  bare      no agent
  filtered  the agent with a policy whose selector never matches loopback
            (DAddr 10.0.0.0/8): the cost of reading the socket and
            evaluating the selector in the kernel, no event leaves it
  post-all  the agent with a policy that posts every connect to the port
            (DPort): the whole path, kernel + ring buffer + user space

Hook (--hook): `tracepoint` = sock/inet_sock_set_state with a sock argument
(fires on every TCP state change: about 6 times per connect+close here);
`kprobe` = tcp_connect (once per connect; needs kprobes, not on this 6.18
host).  With kernel.bpf_stats_enabled=1 the BPF program's run_time_ns /
run_cnt (bpftool prog show -j, our agent's programs only) gives the time
per run and per connect.  Under the QEMU guest (TCG) all numbers are only
relative.  Nothing is asserted: numbers are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "kernel"))

STORM_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    int port = atoi(argv[2]);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(l, (void *)&a, sizeof(a)) || listen(l, 128)) { perror("listen"); return 1; }
    struct linger lg = { 1, 0 };
    for (long i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof(a))) { perror("connect"); return 1; }
        int s = accept(l, NULL, NULL);
        if (s < 0) { perror("accept"); return 1; }
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(c);
        close(s);
    }
    return 0;
}
"""

PORT = 47311


def policy(hook: str, post_all: bool) -> str:
    match = (f'      - index: 0\n        operator: DPort\n        values: ["{PORT}"]\n' if post_all else
             '      - index: 0\n        operator: DAddr\n        values: ["10.0.0.0/8"]\n')
    if hook == "kprobe":
        spec = ("  kprobes:\n  - call: tcp_connect\n    syscall: false\n    args:\n    - index: 0\n"
                "      type: sock\n")
    else:
        spec = ("  tracepoints:\n  - subsystem: sock\n    event: inet_sock_set_state\n    args:\n"
                "    - index: 4\n      type: sock\n")
    return ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: bench-connect\n"
            f"spec:\n{spec}    selectors:\n    - matchArgs:\n{match}")


def build(tmp: pathlib.Path) -> pathlib.Path:
    src, exe = tmp / "storm.c", tmp / "connect_storm"
    src.write_text(STORM_C)
    subprocess.run([shutil.which("cc") or "gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def run_storm(exe: pathlib.Path, n: int) -> float:
    t = time.perf_counter()
    subprocess.run([str(exe), str(n), str(PORT)], check=True)
    return time.perf_counter() - t


def all_programs() -> list[dict]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def our_programs(pid: int, before: set[int]) -> list[dict]:
    """The agent's generic hook programs: by owning pid where bpftool shows
    pids, else the th_* programs that appeared since the agent started."""
    progs = [p for p in all_programs() if p.get("name") in ("th_tracepoint", "th_kprobe", "th_raw_tp")]
    if any("pids" in p for p in progs):
        return [p for p in progs if any(x.get("pid") == pid for x in p.get("pids", []))]
    return [p for p in progs if p["id"] not in before]


def stats(pid: int, before: set[int]) -> tuple[int, int]:
    progs = our_programs(pid, before)
    return sum(p.get("run_time_ns", 0) for p in progs), sum(p.get("run_cnt", 0) for p in progs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connects", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hook", choices=("tracepoint", "kprobe"), default="tracepoint")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    from agent_harness import RunningAgent

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="thconnect-"))
    exe = build(tmp)
    run_storm(exe, 2000)                       # warm up
    configs = ["bare", "filtered", "post-all"]
    times: dict[str, list[float]] = {c: [] for c in configs}
    bpf: dict[str, list[tuple[int, int]]] = {c: [] for c in configs}
    events: dict[str, list[int]] = {c: [] for c in configs}
    old_stats = pathlib.Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    pathlib.Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        for r in range(args.rounds):
            order = configs[r % 3:] + configs[:r % 3]
            for cfg in order:
                if cfg == "bare":
                    times[cfg].append(run_storm(exe, args.connects))
                    continue
                d = tmp / f"{cfg}-{r}"
                d.mkdir()
                (d / "p.yaml").write_text(policy(args.hook, cfg == "post-all"))
                before = {p["id"] for p in all_programs()}
                agent = RunningAgent(d, "--policy", str(d / "p.yaml"))
                try:
                    ns0, n0 = stats(agent.proc.pid, before)
                    times[cfg].append(run_storm(exe, args.connects))
                    ns1, n1 = stats(agent.proc.pid, before)
                    bpf[cfg].append((ns1 - ns0, n1 - n0))
                    if cfg == "post-all":
                        time.sleep(1)
                finally:
                    agent.stop()
                events[cfg].append(sum(1 for e in agent.events() if "process_kprobe" in e or
                                       "process_tracepoint" in e))
    finally:
        pathlib.Path("/proc/sys/kernel/bpf_stats_enabled").write_text(old_stats)
    where = os.uname().release
    hook = ("kprobe tcp_connect (sock arg)" if args.hook == "kprobe"
            else "tracepoint sock/inet_sock_set_state (sock arg)")
    print(f"kernel {where}; hook: {hook}; {args.connects} loopback connects x {args.rounds} rounds (median)")
    base = statistics.median(times["bare"])
    for cfg in configs:
        t = statistics.median(times[cfg])
        line = f"  {cfg:9s} {args.connects / t:10.0f} connects/s  {1e6 * t / args.connects:7.2f} us/connect"
        if cfg != "bare":
            line += f"  ({100 * (t - base) / base:+.1f}% vs bare)"
            ns = sum(x[0] for x in bpf[cfg])
            runs = sum(x[1] for x in bpf[cfg])
            total = args.connects * len(bpf[cfg])
            if runs:
                line += (f"  BPF {ns / runs:6.0f} ns/run, {runs / total:.1f} runs/connect, "
                         f"{ns / total:6.0f} ns/connect")
            line += f"  events {statistics.median(events[cfg]):.0f}/round"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
