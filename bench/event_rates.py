#!/usr/bin/env python3
"""Matched hook events at fixed rates, exec storm CPU and memory, against a baseline checkout.

    sudo .venv/bin/python bench/event_rates.py --baseline-repo /work/main     # ~2-3 minutes
    sudo .venv/bin/python bench/event_rates.py --rates 25000,50000,100000,200000 --seconds 3

Rates: one agent per checkout with one policy (a kprobe on sys_getpgid, a
syscall hook: on kernels without syscall kprobes it goes through the
raw_syscalls/sys_enter fallback) and matchBinaries on a generator binary with
a unique name.  The generator (C, built here) calls getpgid(0) at a fixed rate
for --seconds, paced in 1 ms ticks, and prints how many calls it made: the
events *produced*.  Once the agent has settled (neither its counters nor its CPU time moved for
3 s):
  received     process_kprobe lines of the generator in the export file;
  counted lost in-kernel losses (the agent's `losses` map, hook + hook_busy
               slots, read with bpftool through the agent's fds) plus what the
               file exporter counted as lost (tetrahost_export_dropped_total);
  unaccounted  produced - received - counted lost (must be 0);
and where a gap would be: "read" is the agent's count of records of the
policy (tetragon_policy_events_total), so produced - kernel lost - read is
the kernel side's gap and read - received - exporter lost the user side's
(exporter losses are of every event kind: the host's own exec events dropped
with ours make it negative, never hide a loss of ours).  Decode errors are
printed too.
Outputs: the file sink on tmpfs; with --journald also the journal (a
systemd-journald started for the run when none listens).  Events carry each
checkout's default process fields; --process-fields turns on
export.process_cred and process_ns (cap, credentials, namespaces: Tetragon's
enable-process-cred/-ns) in checkouts that have the keys, so a checkout from
before them (which always wrote those fields) is compared like for like.

Exec storm: the same agent (it loads the four seed policies of packaging/policies
beside the rate policy) first, `--execs` fork+exec+wait of a copy of /bin/true; agent CPU (its
threads' run time from /proc/PID/task/*/schedstat, ns precision, until its
file stops growing) per exec.  Memory: the
agent's RSS after start with the seed policies, right after the rate floods,
SETTLE_SECONDS later (the same wait for every checkout), and its peak (VmHWM:
the start's policy loading included).

Each checkout runs its own agent with its own venv (CHECKOUT/.venv/bin/python);
configurations alternate, so both see the same host noise.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GEN_NAME = "th_rate_gen"
GEN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    double rate = atof(argv[1]), seconds = atof(argv[2]);
    long done = 0, total = (long)(rate * seconds);
    double t0 = now();
    struct timespec tick = {0, 1000000};
    while (done < total) {
        long due = (long)((now() - t0) * rate) + 1;
        if (due > total) due = total;
        while (done < due) { syscall(SYS_getpgid, 0); done++; }
        nanosleep(&tick, NULL);
    }
    printf("%ld %.6f\n", done, now() - t0);
    return 0;
}
"""
POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: bench-event-rates
spec:
  kprobes:
  - call: sys_getpgid
    syscall: true
    args:
    - index: 0
      type: int
    selectors:
    - matchBinaries:
      - operator: In
        values: ["{gen}"]
"""
SETTLE_SECONDS = 6
SEED = sorted((c.REPO / "packaging" / "policies").glob("*/*.yaml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """`tetrahost run` of one checkout: file sink on tmpfs, journald if asked,
    metrics on a private port, no control socket, no pins, no rate limit."""

    def __init__(self, repo: pathlib.Path, work: pathlib.Path, policies: list[pathlib.Path], journald: bool,
                 process_fields: bool = False):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        (work / "policies.d").mkdir(exist_ok=True)
        self.export = work / "events.json"
        self.port = free_port()
        conf = work / "tetrahost.toml"
        # Tetragon's policy directory too, where this checkout's agent watches one
        tp_dir = (f'tetragon_policy_dir = "{work}/policies.d"\n'
                  if "tetragon_policy_dir" in (repo / "tetrahost/config.py").read_text() else "")
        fields = ("[export]\nprocess_cred = true\nprocess_ns = true\n"
                  if process_fields and "process_cred" in (repo / "tetrahost/config.py").read_text() else "")
        conf.write_text(f'[agent]\npolicy_dir = "{work}/policies.d"\n{tp_dir}pin_dir = ""\n{fields}'
                        '[export.file]\nmax_size_mb = 100000\nmax_backups = 0\n')
        argv = [str(repo / ".venv/bin/python"), "-m", "tetrahost.cli.main", "run", "--config", str(conf),
                "--no-stdout", "--no-socket", "--export-rate-limit", "-1", "--export-file", str(self.export),
                "--metrics-address", f"127.0.0.1:{self.port}",
                "--journald" if journald else "--no-journald"]
        for p in policies:
            argv += ["--policy", str(p)]
        self.log = work / "agent.log"
        self._cpu = None
        self.proc = subprocess.Popen(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
                                     start_new_session=True)
        if not c.wait_until(lambda: "tetrahost ready" in self.log.read_text() or self.proc.poll() is not None, 90) \
                or self.proc.poll() is not None:
            raise RuntimeError(f"agent of {repo} did not start: {self.log.read_text()[-2000:]}")
        c.wait_settled(self.proc.pid)
        _, maps = c.bpf_ids(self.proc.pid)
        self.losses_map = c.map_named(maps, "losses")

    def kernel_losses(self) -> int:
        """Hook records the kernel could not hand over (ring buffer full, scratch busy)."""
        import tetrahost.bpf.native  # noqa: F401  (the slots' numbers come from csrc/events.h)
        from tetrahost.sensors.process import LOSS_SLOTS
        per = c.percpu_sum(self.losses_map)
        return sum(per.get(LOSS_SLOTS[k], 0) for k in ("hook", "hook_busy"))

    def counters(self) -> dict[str, int]:
        """From the agent's metrics: records of the rate policy read ("read"),
        events the exporters lost ("export_lost"), malformed records ("decode_errors")."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()

        def total(pattern: str) -> int:
            return int(sum(float(m) for m in re.findall(pattern, text, re.M)))
        return {"read": total(r'^tetragon_policy_events_total\{[^}]*policy="bench-event-rates"[^}]*\} (\S+)'),
                # the file's own losses: "received" counts its lines (journald has its own below)
                "export_lost": total(r'^tetrahost_export_dropped_total\{exporter="file:[^}]*\} (\S+)'),
                "journal_sent": total(r'^tetrahost_export_events_total\{exporter="journald"\} (\S+)'),
                "journal_lost": total(r'^tetrahost_export_dropped_total\{exporter="journald"\} (\S+)'),
                "decode_errors": total(r"^tetrahost_decode_errors_total (\S+)")}

    def cpu(self) -> float:
        if self._cpu is None:
            self._cpu = c.ThreadsCpu(self.proc.pid)   # ns precision: clock ticks were 3.3 µs per exec here
        return self._cpu()

    def minor_faults(self) -> int:
        """Page faults of the agent so far (memory it gets from the kernel anew)."""
        return int(pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[7])

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        get = lambda key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1))  # noqa: E731
        return get("VmRSS"), get("VmHWM")

    def drained(self) -> None:
        c.wait_drained(self.export, quiet=1.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class HookLineCounter:
    """process_kprobe lines of the generator in the export file, read
    incrementally (the file holds the whole host's exec events too)."""

    def __init__(self, export: pathlib.Path):
        self.export = export
        self.offset = 0
        self.count = 0
        self._rest = b""

    def update(self) -> int:
        try:
            with open(self.export, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        self.offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        needle = GEN_NAME.encode()
        self.count += sum(1 for line in lines if needle in line and b'"process_kprobe"' in line)
        return self.count


class Journal:
    """A systemd-journald for the run when none listens (PID 1 is not systemd
    here); stopped by its PID afterwards.  proc is None when one was there."""

    def __init__(self):
        from tetrahost.export.journald import journal_available
        self.proc = None
        if journal_available():
            return
        self.proc = subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not c.wait_until(journal_available, 30):
            self.stop()
            raise RuntimeError("systemd-journald did not open its socket")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def exec_lines(export: pathlib.Path) -> int:
    """process_exec lines (of any process) in the export file."""
    n = 0
    for path in c.export_files(export):
        with open(path, "rb") as f:
            n += sum(line.startswith(b'{"process_exec"') for line in f)
    return n


def measure(repo, work, gen, storm, rates, seconds, execs, journald, process_fields) -> dict:
    """One agent of `repo` with the seed policies and the rate policy: exec
    storm first (CPU per exec, RSS), then the rate steps, then the peak RSS."""
    agent = Agent(repo, work, [*SEED, work.parent / "rates.yaml"], journald, process_fields)
    res: dict = {"rows": []}
    try:
        res["rss_start"], _ = agent.memory()
        if execs:
            all0 = exec_lines(agent.export)
            cpu0 = agent.cpu()
            wall, _ = storm.run(execs)
            agent.drained()
            cpu = agent.cpu() - cpu0
            # The file holds every process's events: the host's own execs during the
            # storm (other work on a shared machine) cost the agent too.
            exported = exec_lines(agent.export) - all0
            res["storm"] = {"us_per_exec": cpu / execs * 1e6, "execs_s": execs / wall,
                            "seen": c.count_agent(agent.export, str(storm.target)),
                            "all_execs": exported, "us_per_any_exec": cpu / max(1, exported) * 1e6}
            c.remove_exports(agent.export)
        for rate in rates:
            k0, m0, cpu0, f0 = agent.kernel_losses(), agent.counters(), agent.cpu(), agent.minor_faults()
            counter = HookLineCounter(agent.export)
            out = subprocess.run([str(gen), str(rate), str(seconds)], check=True, capture_output=True,
                                 text=True).stdout.split()
            produced, wall = int(out[0]), float(out[1])
            # Done when every event is accounted for, or for 3 s neither our
            # lines, the counters nor the agent's CPU time moved (a busy agent
            # is still working through the flood; the host's other events keep
            # the file growing, so its size says nothing).  Progress is taken
            # into account before the time without it is judged: one round of
            # reads (a fast-growing file, bpftool, a scrape of a busy agent)
            # can itself take over 3 s, and judging first ended the wait while
            # the agent was still at work (the first version of this script).
            last, still, last_cpu, began = None, time.monotonic(), cpu0, time.monotonic()
            while True:
                received = counter.update()
                m = agent.counters()
                klost = agent.kernel_losses() - k0
                elost = m["export_lost"] - m0["export_lost"]
                cpu, now = agent.cpu(), time.monotonic()
                if received + klost >= produced:
                    break
                state = (received, klost, elost, m["read"])
                if state != last or cpu - last_cpu > 0.05:
                    last, still = state, now
                elif now - still > 3:
                    break
                last_cpu = cpu
                time.sleep(0.5)
            read = m["read"] - m0["read"]
            res["rows"].append({"rate": rate, "achieved": produced / wall, "produced": produced,
                                "received": received, "klost": klost, "elost": elost, "lost": klost + elost,
                                "unaccounted": produced - received - klost - elost,
                                "kernel_gap": produced - klost - read, "user_gap": read - received - elost,
                                "decode_errors": m["decode_errors"] - m0["decode_errors"], "read": read,
                                "cpu": agent.cpu() - cpu0, "faults": agent.minor_faults() - f0,
                                "settled": time.monotonic() - began,
                                "journal": (m["journal_sent"] - m0["journal_sent"], m["journal_lost"] - m0["journal_lost"])})
            c.remove_exports(agent.export)      # keep tmpfs small between steps
        res["rss_end"], res["hwm"] = agent.memory()
        # The same wait for every checkout: long enough for an agent that gives its
        # heap back once a flood is over (runtime/heap.py checks every 2 s) to have done so.
        time.sleep(SETTLE_SECONDS)
        res["rss_settled"], _ = agent.memory()
    finally:
        agent.stop()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-repo", type=pathlib.Path, help="another built checkout to compare with")
    ap.add_argument("--rates", default="25000,50000,100000,200000")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each rate step")
    ap.add_argument("--execs", type=int, default=3000, help="execs of the exec storm")
    ap.add_argument("--rounds", type=int, default=1, help="repetitions (order alternates)")
    ap.add_argument("--no-storm", action="store_true")
    ap.add_argument("--journald", action="store_true",
                    help="journald sink on too (a systemd-journald is started for the run if none listens)")
    ap.add_argument("--process-fields", action="store_true",
                    help="export.process_cred and process_ns on where a checkout has them (like for like "
                         "with checkouts that always wrote cap, credentials and namespaces)")
    args = ap.parse_args()
    c.require_root()
    journal = Journal() if args.journald else None
    journald = journal is not None
    repos = {"this checkout": c.REPO}
    if args.baseline_repo:
        repos = {"baseline": args.baseline_repo.resolve(), **repos}
    rates = [int(r) for r in args.rates.split(",")]
    work = c.tmpfs_dir("thbench-rates-")
    gen = work / GEN_NAME
    (work / "gen.c").write_text(GEN_C)
    subprocess.run(["gcc", "-O2", "-o", str(gen), str(work / "gen.c")], check=True)
    (work / "rates.yaml").write_text(POLICY.format(gen=gen))
    storm = c.Storm()
    # A warm-up storm: the first of a run measured its checkout's agent at
    # 36-39 µs per exec where the same checkout's second round took 26-27.
    if not args.no_storm:
        storm.run(max(300, args.execs // 5))
    print(f"# tetrahost event rates\n# {c.machine_line()}\n# outputs: file (tmpfs)"
          f"{', journald' + (' (started for this run)' if journal.proc else '') if journald else ''}"
          f"{'; process_cred and process_ns on' if args.process_fields else ''}")
    if journald:
        # journald's socket queue: with the kernel's default of 10 datagrams,
        # once a burst has filled it the agent's journald worker waits for
        # journald entry by entry (measured: 1.8 voluntary context switches
        # per exec in that thread); systemd as PID 1 sets 512 (its
        # sysctl.d/50-default.conf).  Printed, not changed.
        qlen = pathlib.Path("/proc/sys/net/unix/max_dgram_qlen").read_text().strip()
        print(f"# net.unix.max_dgram_qlen = {qlen} (512 where systemd is PID 1)")
    for name, repo in repos.items():
        print(f"# {name}: {repo} ({subprocess.run(['git', '-C', str(repo), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()})")
    results: dict[str, list] = {n: [] for n in repos}
    try:
        for rnd in range(args.rounds):
            order = list(repos.items())
            if rnd % 2:
                order.reverse()
            for name, repo in order:
                results[name].append(measure(repo, work / "agent", gen, storm, rates, args.seconds,
                                             0 if args.no_storm else args.execs, journald,
                                             args.process_fields))
                shutil.rmtree(work / "agent", ignore_errors=True)
    finally:
        storm.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        if journal is not None:
            journal.stop()

    print(f"\n## Matched hook events at fixed rates ({args.seconds:g} s per step)\n")
    print("| checkout | round | target/s | achieved/s | produced | received | counted lost (kernel + file exporter) "
          "| unaccounted | kernel / user gap | decode errors | agent CPU µs per record read | page faults per record "
          "| s to settle |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        for rnd, res in enumerate(runs):
            for r in res["rows"]:
                print(f"| {name} | {rnd + 1} | {r['rate']:,} | {r['achieved']:,.0f} | {r['produced']:,} "
                      f"| {r['received']:,} ({r['received'] / r['produced']:.1%}) "
                      f"| {r['lost']:,} ({r['klost']:,} + {r['elost']:,}) | {r['unaccounted']:,} "
                      f"| {r['kernel_gap']:,} / {r['user_gap']:,} | {r['decode_errors']:,} "
                      f"| {r['cpu'] / max(1, r['read']) * 1e6:.1f} | {r['faults'] / max(1, r['read']):.2f} "
                      f"| {r['settled']:.1f} |")
    if journald:
        print("\njournald (all events of the agent during each step, ours and the host's): "
              "entries sent / dropped (journald busy, queue full)\n")
        print("| checkout | round | target/s | sent | dropped |")
        print("|---|---:|---:|---:|---:|")
        for name, runs in results.items():
            for rnd, res in enumerate(runs):
                for r in res["rows"]:
                    print(f"| {name} | {rnd + 1} | {r['rate']:,} | {r['journal'][0]:,} | {r['journal'][1]:,} |")
    print(f"\n## Exec storm with the {len(SEED)} seed policies ({args.execs} execs) and memory\n")
    print("| checkout | round | agent CPU µs/exec | execs/s | exec / exit events seen | execs exported "
          "(any process) | agent CPU µs per exported exec | RSS at start MB | RSS at end MB "
          f"| RSS {SETTLE_SECONDS} s later MB | peak RSS MB |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        for rnd, res in enumerate(runs):
            s = res.get("storm") or {"us_per_exec": float("nan"), "execs_s": float("nan"),
                                     "seen": {"exec": "-", "exit": "-"}, "all_execs": 0,
                                     "us_per_any_exec": float("nan")}
            print(f"| {name} | {rnd + 1} | {s['us_per_exec']:.1f} | {s['execs_s']:,.0f} "
                  f"| {s['seen']['exec']} / {s['seen']['exit']} | {s['all_execs']} | {s['us_per_any_exec']:.1f} "
                  f"| {res['rss_start'] / 1024:.1f} "
                  f"| {res['rss_end'] / 1024:.1f} | {res['rss_settled'] / 1024:.1f} | {res['hwm'] / 1024:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
