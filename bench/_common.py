"""Shared pieces of the benchmarks: the exec-storm workload, the agent and its
peers as subprocesses, and reading BPF program/map state with bpftool.

Nothing here asserts: the benchmarks print numbers and leave judging to people.
"""
from __future__ import annotations

import json
import os
import re
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# Why a C program and not a shell loop: `for i in ...; do /bin/true; done` in a
# shell pays for the shell's own fork bookkeeping, variable expansion and
# PATH lookup on every iteration, and that noise is of the same order as what
# we want to measure.  The C loop is fork + execve + waitpid and nothing else.
# The child execs a *copy* of /usr/bin/true with a name no other process on
# the host uses, so every tool's output can be filtered to exactly our execs
# (other engineers' tests run on the same machine at the same time).
# A copy of the dynamic /usr/bin/true (not a static binary): an exec that
# maps ld.so and libc is what real workloads do.
STORM_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include <time.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    double rate = argc > 3 ? atof(argv[3]) : 0;     /* execs per second; 0: as fast as it can */
    char *av[] = {argv[2], "--storm", "some-argument", NULL};
    char *ev[] = {"PATH=/usr/bin:/bin", NULL};
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < n; i++) {
        if (rate > 0) {     /* exec i is due at start + i/rate: late execs do not shift the rest */
            long long due = start.tv_nsec + (long long)(i * 1e9 / rate);
            struct timespec at = {start.tv_sec + due / 1000000000LL, due % 1000000000LL};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
        }
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 1; }
        if (p == 0) { execve(argv[2], av, ev); _exit(127); }
        int st;
        if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
            fprintf(stderr, "child failed\n");
            return 1;
        }
    }
    return 0;
}
"""
TARGET_NAME = "th_bench_true"


class Storm:
    """Builds the storm program once; run(n, workers) -> (seconds, cpu_seconds)."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="thbench-"))
        src = self.dir / "storm.c"
        src.write_text(STORM_C)
        self.exe = self.dir / "storm"
        subprocess.run(["gcc", "-O2", "-o", str(self.exe), str(src)], check=True)
        self.target = self.dir / TARGET_NAME
        shutil.copy2("/usr/bin/true", self.target)

    def run(self, n: int, workers: int = 1, rate: float = 0) -> tuple[float, float]:
        """n execs in total, split over `workers` processes running at once;
        with rate, each worker paced at rate/workers execs per second.
        Returns wall seconds and the CPU seconds (user+sys) the storm and all
        its children used: BPF programs run in the exec'ing task's context, so
        their cost shows up there even when wall time is blurred by noise."""
        per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
        t0 = time.perf_counter()
        pace = [str(rate / workers)] if rate else []
        procs = [subprocess.Popen([str(self.exe), str(k), str(self.target), *pace]) for k in per]
        cpu = 0.0
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode:
                raise RuntimeError(f"storm worker failed ({p.returncode})")
            cpu += ru.ru_utime + ru.ru_stime
        return time.perf_counter() - t0, cpu

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (utime+stime) a process has used so far."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ThreadsCpu:
    """CPU seconds a process has used, in nanoseconds' precision: the run time of
    each of its threads (the first field of /proc/PID/task/TID/schedstat), where
    proc_cpu counts clock ticks (10 ms: 3.3 µs per exec over 3000 execs).
    Monotonic: each reading adds what every thread gained since the last one
    (a new thread all of its time), so a thread that ends between two
    readings only takes the time since the last reading with it."""

    def __init__(self, pid: int):
        self.pid = pid
        self._last: dict[str, int] = {}
        self._total = 0

    def __call__(self) -> float:
        now: dict[str, int] = {}
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                now[tid] = int(pathlib.Path(f"/proc/{self.pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue        # ended meanwhile
        for tid, ns in now.items():
            self._total += ns - self._last.get(tid, 0)
        self._last = now
        return self._total / 1e9


def bpf_ids(pid: int) -> tuple[set[int], set[int]]:
    """BPF program and map ids a process holds fds of (from /proc/PID/fdinfo).
    Exact even when other agents with the same program names run on the host."""
    progs, maps = set(), set()
    fdinfo = pathlib.Path(f"/proc/{pid}/fdinfo")
    for f in fdinfo.iterdir():
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key == "prog_id":
                progs.add(int(val))
            elif key == "map_id":
                maps.add(int(val))
    return progs, maps


def bpftool_json(*args: str):
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def prog_stats(ids) -> dict[int, dict]:
    """id -> {name, run_time_ns, run_cnt} (0 when kernel.bpf_stats_enabled was off)."""
    res = {}
    for p in bpftool_json("prog", "show"):
        if p["id"] in ids:
            res[p["id"]] = {"name": p.get("name", "?"), "run_time_ns": p.get("run_time_ns", 0),
                            "run_cnt": p.get("run_cnt", 0)}
    return res


def run_costs(before: dict[int, dict], after: dict[int, dict]) -> list[tuple[str, int, float]]:
    """(program name, runs, ns per run) of each program that ran between two
    prog_stats() readings, sorted by name."""
    rows = []
    for pid, a in after.items():
        b = before.get(pid, {"run_cnt": 0, "run_time_ns": 0})
        runs = a["run_cnt"] - b["run_cnt"]
        if runs:
            rows.append((a["name"], runs, (a["run_time_ns"] - b["run_time_ns"]) / runs))
    return sorted(rows)


def costs_during(pid: int, work) -> list[tuple[str, int, float]]:
    """run_costs() of the programs process pid holds, over work() (a callable);
    kernel.bpf_stats_enabled must be on."""
    progs, _ = bpf_ids(pid)
    before = prog_stats(progs)
    work()
    return run_costs(before, prog_stats(progs))


def percpu_sum(map_id: int) -> dict[int, int]:
    """key -> sum over CPUs of a per-CPU array of u64 (the agent's `losses`)."""
    res = {}
    for e in bpftool_json("map", "dump", "id", str(map_id)):
        f = e["formatted"]
        res[f["key"]] = sum(v["value"] for v in f["values"])
    return res


def map_named(ids, name: str) -> int | None:
    for i in ids:
        if bpftool_json("map", "show", "id", str(i)).get("name") == name:
            return i
    return None


def wait_settled(pid: int, timeout: float = 60) -> bool:
    """Past "ready" the agent still prepares spare hook objects for reloads
    (its warm pool: the verifier, seconds of CPU with policies loaded).  A
    measurement starts once it has settled: under 2 % of a core for 0.5 s.
    Measured without this wait, an exec storm started right after a start
    with the seed policies ran at 0.72x of bare instead of 0.94x."""
    cpu = ThreadsCpu(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu0 = cpu()
        time.sleep(0.5)
        if cpu() - cpu0 < 0.01:
            return True
    return False


class Tool:
    """A long-running observer (agent or peer) started for one measurement."""

    def __init__(self, name: str, argv: list[str], workdir: pathlib.Path, ready, env=None, cwd=REPO):
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        self._out = open(self.out, "wb")
        self._err = open(self.err, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, cwd=cwd,
                                     env=env, start_new_session=True)
        started = time.monotonic()
        deadline = started + 60
        while not ready(self):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({self.proc.returncode}): {self.err.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after 60 s: {self.err.read_text()[-2000:]}")
            time.sleep(0.05)
        self.ready_s = time.monotonic() - started     # how long it took to be ready
        time.sleep(0.2)   # let it settle into its event loop

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()
        return self.proc.returncode


# Optional side channels of the agent that the benchmark turns off when this
# version of `tetrahost run` has the flag: no rate limit (we count events),
# no metrics port / control socket (would clash with other agents on the host).
_QUIET_FLAGS = (("--export-rate-limit", "-1"), ("--metrics-address", "off"), ("--no-journald",),
                ("--no-socket",), ("--config",))
_agent_flags: dict[pathlib.Path, list[str]] = {}


def agent_python(repo: pathlib.Path = REPO) -> str:
    """A checkout's own interpreter (its venv), else ours."""
    venv = repo / ".venv" / "bin" / "python"
    return str(venv) if repo != REPO and venv.exists() else sys.executable


def agent_flags(repo: pathlib.Path = REPO) -> list[str]:
    if repo not in _agent_flags:
        helptext = subprocess.run([agent_python(repo), "-m", "tetrahost.cli.main", "run", "--help"],
                                  capture_output=True, text=True, cwd=repo).stdout
        _agent_flags[repo] = [a for f in _QUIET_FLAGS if re.search(rf"{f[0]}\b", helptext) for a in f]
    return _agent_flags[repo]


def start_agent(workdir: pathlib.Path, export: pathlib.Path, env=None, extra=(), repo: pathlib.Path = REPO) -> Tool:
    """`tetrahost run` of a checkout (this one by default), run from that checkout."""
    flags = agent_flags(repo)
    if "--config" in flags:
        # No rotation (the default keeps 5 x 10 MB, fewer events than a long
        # storm writes, and we count every event) and a private policy dir.
        (workdir / "policies.d").mkdir(exist_ok=True)
        conf = workdir / "tetrahost.toml"
        conf.write_text(f'[agent]\npolicy_dir = "{workdir}/policies.d"\n'
                        '[export.file]\nmax_size_mb = 100000\nmax_backups = 0\n')
        flags = [f if f != "--config" else f"--config={conf}" for f in flags]
    agent = Tool("tetrahost", [agent_python(repo), "-m", "tetrahost.cli.main", "run", "--no-stdout",
                               "--export-file", str(export), *flags, *extra], workdir,
                 lambda t: "tetrahost ready" in t.err.read_text(), env=env, cwd=repo)
    wait_settled(agent.pid)
    return agent


def export_files(export: pathlib.Path) -> list[pathlib.Path]:
    """The export file and its rotated siblings (events-<time>.json)."""
    return sorted(export.parent.glob(f"{export.stem}*{export.suffix}"))


def _has_links(n: int):
    """Ready once the process holds n attached BPF links (fdinfo shows link_type)."""
    def ready(t: Tool) -> bool:
        links = 0
        for f in pathlib.Path(f"/proc/{t.pid}/fdinfo").iterdir():
            try:
                links += "link_type:" in f.read_text()
            except OSError:
                pass
        return links >= n
    return ready


def start_execsnoop(workdir: pathlib.Path) -> Tool:
    # Output to a tmpfs file, fully buffered (stdout is not a tty): the
    # cheapest way it can run, as the agent writes to a tmpfs file too.
    return Tool("execsnoop", ["/usr/sbin/execsnoop"], workdir, _has_links(2))


def start_bpftrace(workdir: pathlib.Path) -> Tool:
    # execsnoop.bt as shipped by Debian: the bpftrace peer of execsnoop.
    return Tool("bpftrace", ["bpftrace", "/usr/sbin/execsnoop.bt"], workdir,
                lambda t: "ARGS" in t.out.read_text(errors="replace"))


def count_agent(export: pathlib.Path, target: str) -> dict[str, int]:
    """process_exec / process_exit events for our target binary in the agent's output."""
    counts = {"exec": 0, "exit": 0}
    for path in export_files(export):
        with open(path, "rb") as f:
            for line in f:
                if target.encode() not in line:
                    continue
                ev = json.loads(line)
                for kind in ("exec", "exit"):
                    e = ev.get("process_" + kind)
                    if e and e["process"]["binary"] == target:
                        counts[kind] += 1
    return counts


def remove_exports(export: pathlib.Path) -> None:
    for path in export_files(export):
        path.unlink()


def wait_drained(export: pathlib.Path, quiet: float = 0.8, timeout: float = 120) -> bool:
    """Wait until the agent's output (all rotated files) stops growing for `quiet` s:
    it writes once per ring-buffer drain, so a quiet file means it has caught up."""
    sizes: list[int] = []
    k = int(quiet / 0.1)
    return wait_until(lambda: (sizes.append(sum(p.stat().st_size for p in export_files(export))) or True)
                      and len(sizes) > k and sizes[-1] == sizes[-1 - k], timeout)


def count_lines(path: pathlib.Path, needle: str) -> int:
    with open(path, "rb") as f:
        return sum(needle.encode() in line for line in f)


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def tmpfs_dir(prefix: str) -> pathlib.Path:
    """Outputs go to tmpfs so no tool is measured against a disk."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def machine_line() -> str:
    load = os.getloadavg()
    return (f"kernel {os.uname().release}, {os.cpu_count()} CPUs, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")


def require_root():
    if os.geteuid() != 0:
        sys.exit("needs root (loads BPF programs, sets kernel.bpf_stats_enabled)")
