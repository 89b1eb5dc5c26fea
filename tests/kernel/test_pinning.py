"""Enforcement that outlives the agent (docs/pinning.md), on the host kernel.

A loop runs a Sigkill'ed "miner" every few milliseconds while the agent is
kill -9'ed and restarted: no run may succeed, no run may be killed (reported)
twice, and every run made while no agent ran must be exported by the next one.
Each test has a pin directory of its own, removed at the end.
"""
from __future__ import annotations

import array
import datetime
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import termios
import threading
import time
import uuid

import pytest

from agent_harness import SLOWDOWN, RunningAgent, policy_text, private_pin_dir, require_root_and_bpf

RESTARTS = 10


def _kill_policy(name: str, binary: str) -> str:
    return policy_text(name, f"""
  kprobes:
  - call: "security_bprm_check"
    syscall: false
    args:
    - index: 0
      type: "linux_binprm"
    selectors:
    - matchBinaries:
      - operator: "In"
        values:
        - "{binary}"
      matchActions:
      - action: Sigkill
""")


def _watch_policy(name: str, binary: str) -> str:
    """A policy on the same hook that never fires (binary is never run)."""
    return _kill_policy(name, binary).replace("action: Sigkill", "action: Post")


@pytest.fixture
def pin_dir():
    require_root_and_bpf()
    path = private_pin_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)     # whatever a failed test left


@pytest.fixture
def miner(tmp_path):
    """(binary path, policy name, policy file) unique to the test."""
    tag = uuid.uuid4().hex[:10]
    binary = tmp_path / f"xmrig-{tag}"
    shutil.copy("/bin/true", binary)
    name = f"pin-kill-{tag}"
    policy = tmp_path / f"{name}.yaml"
    policy.write_text(_kill_policy(name, str(binary)))
    return str(binary), name, policy


def _start(tmp_path, i, pin_dir, *args) -> RunningAgent:
    """Agent i; all of a test's agents export to one file, as a host's agents
    do across restarts (an exporter's marks are by its name: docs/pinning.md)."""
    d = tmp_path / f"agent{i}"
    d.mkdir()
    return RunningAgent(d, *args, env={"TETRAHOST_PIN_DIR": pin_dir}, export_path=tmp_path / "events.json")


def _kills(agent: RunningAgent, policy: str) -> list[int]:
    """The pid (which run) of each Sigkill event of policy in the agent's export
    file (shared by a test's agents: every agent's).  Not the process's
    arguments: where the kernel kills at the exec check (BPF-LSM, fmod_ret,
    kprobe) the event's process is still the caller, before the new argv."""
    out = []
    if not agent.events_path.exists():
        return out
    with open(agent.events_path, "rb") as f:         # line by line: the file can be tens of MB
        for line in f:
            if b"KPROBE_ACTION_SIGKILL" not in line or policy.encode() not in line:
                continue
            body = json.loads(line).get("process_kprobe")
            if body and body.get("policy_name") == policy and body.get("action") == "KPROBE_ACTION_SIGKILL":
                out.append(body["process"]["pid"])
    return out


def _kill_events(agent: RunningAgent, policy: str) -> list[tuple[int, float]]:
    """(pid, event time as epoch seconds) of each Sigkill event of policy."""
    out = []
    with open(agent.events_path, "rb") as f:         # line by line: the file can be tens of MB
        for line in f:
            if b"KPROBE_ACTION_SIGKILL" in line and policy.encode() in line:
                e = json.loads(line)
                body = e["process_kprobe"]
                if body.get("policy_name") == policy and body.get("action") == "KPROBE_ACTION_SIGKILL":
                    stamp = e["time"].rstrip("Z")
                    head, _, frac = stamp.partition(".")
                    when = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.timezone.utc)
                    out.append((body["process"]["pid"], when.timestamp() + float("0." + (frac or "0"))))
    return out


def _kills_per_run(events: list[tuple[int, float]], runs: list[tuple]) -> dict[int, int]:
    """Kill events per run (index into runs).  A run is its pid *and* time: in a
    long test a guest's pids wrap (pid_max 32768: ten agent starts and 2,500
    runs took a 6.12 guest round), so a pid alone names several runs.  An event
    belongs to the last run of its pid that started before it (0.5 s of slack
    for the kernel clock's conversion to wall time)."""
    by_pid: dict[int, list[tuple[float, int]]] = {}
    for r, (pid, _, _, wall) in enumerate(runs):
        by_pid.setdefault(pid, []).append((wall, r))
    counts: dict[int, int] = {}
    for pid, when in events:
        earlier = [r for wall, r in by_pid.get(pid, ()) if wall <= when + 0.5]
        if earlier:
            counts[earlier[-1]] = counts.get(earlier[-1], 0) + 1
    return counts


def _kill_times(agent: RunningAgent, policy: str, pids: list[int]) -> str:
    """For a failure message: each kill event of these pids, by its time and
    line number in the file (the same time twice: one record exported twice;
    two times: two records)."""
    out = []
    with open(agent.events_path, "rb") as f:
        for n, line in enumerate(f, 1):
            if b"KPROBE_ACTION_SIGKILL" in line and policy.encode() in line:
                e = json.loads(line)
                pid = e["process_kprobe"]["process"]["pid"]
                if pid in pids:
                    out.append(f"pid {pid}: line {n}, time {e.get('time')}, "
                               f"function {e['process_kprobe'].get('function_name')}")
    return "\n".join(out)


def _run(binary: str, *args: str) -> int:
    return subprocess.run([binary, *args]).returncode


def _run_pid(binary: str) -> tuple[int, int]:
    """(pid, return code) of one run: the pid names the run in the kill events."""
    proc = subprocess.Popen([binary])
    return proc.pid, proc.wait()


def _killed(pid: int):
    return lambda e: e.get("process_kprobe", {}).get("process", {}).get("pid") == pid


def _pinned_ids(root: str) -> tuple[set[int], set[int]]:
    """(program ids, map ids) of what is pinned under root, from bpftool."""
    progs, maps = set(), set()
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            link = subprocess.run(["bpftool", "-j", "link", "show", "pinned", path], capture_output=True, text=True)
            if link.returncode == 0:
                progs.add(json.loads(link.stdout)["prog_id"])
                continue
            m = subprocess.run(["bpftool", "-j", "map", "show", "pinned", path], capture_output=True, text=True)
            if m.returncode == 0:
                maps.add(json.loads(m.stdout)["id"])
    return progs, maps


def _live_ids() -> tuple[set[int], set[int]]:
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True).stdout)
    return {p["id"] for p in progs}, {m["id"] for m in maps}


WRITE_MARK_WINDOW = 0.5     # seconds before a kill whose runs' events its agent may have written unmarked


def test_kill9_and_restart_ten_times_without_a_gap(tmp_path, pin_dir, miner):
    binary, policy, policy_file = miner
    agents = [_start(tmp_path, 0, pin_dir, "--policy", str(policy_file))]
    runs: list[tuple[int, float, int, float]] = []      # (pid, start time, return code, start wall time)
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            began, wall = time.monotonic(), time.time()
            pid, rc = _run_pid(binary)
            runs.append((pid, began, rc, wall))
            time.sleep(0.003)

    gaps: list[tuple[float, float, int]] = []    # (agent dead at, next ready at, next agent index)
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    try:
        for i in range(1, RESTARTS + 1):
            time.sleep(0.3)
            agents[-1].proc.kill()
            agents[-1].proc.wait()
            dead = time.monotonic()
            time.sleep(0.2)                          # execs while no agent runs at all
            agents.append(_start(tmp_path, i, pin_dir, "--policy", str(policy_file)))
            gaps.append((dead, time.monotonic(), i))
            assert "1 hooks adopted, 0 loaded fresh" in agents[-1].log_text()
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    last = agents[-1]
    began, wall = time.monotonic(), time.time()
    final, rc = _run_pid(binary)
    runs.append((final, began, rc, wall))        # a run too: its pid may be an earlier run's, reused
    last.wait_line("KPROBE_ACTION_SIGKILL", _killed(final))
    last.settle()

    succeeded = [n for n, _, rc, _ in runs if rc != -9]
    assert len(runs) > 200, "the probe loop hardly ran"
    assert not succeeded, f"{len(succeeded)} of {len(runs)} miner runs were not killed: {succeeded[:10]}"
    reported = _kills_per_run(_kill_events(last, policy), runs)   # the file every agent wrote, read once
    # The one duplicate docs/pinning.md allows: a kill -9 between an exporter's
    # write and its mark makes that batch twice (at least once, never lost).
    # That batch was read just before the kill; a run twice that is not, or
    # three times, is a bug.  (Seen once, in a clean-clone CI run on loaded 2
    # cores: 8 consecutive runs within 30 ms, written by both agents around a kill.)
    kills = [dead for dead, _, _ in gaps]
    dups = {runs[r][0]: c for r, c in reported.items()
            if c > 2 or (c == 2 and not any(dead - WRITE_MARK_WINDOW < runs[r][1] < dead for dead in kills))}
    starts = "\n".join(f"agent {i}: {line}" for i, a in enumerate(agents) for line in a.log_text().splitlines()
                       if "waiting at start" in line or "not written twice" in line)
    assert not dups, f"{len(dups)} runs reported killed more than once: {sorted(dups)[:20]}\n{starts}\n" \
        + _kill_times(last, policy, sorted(dups)[:3])
    lost_logged = any("records lost" in a.log_text() for a in agents)
    in_gaps = [(r, i) for r, (_, began, _, _) in enumerate(runs) for dead, ready, i in gaps
               if dead < began < ready - 0.05]
    assert len(in_gaps) >= RESTARTS, "too few runs fell while no agent was ready"
    missing = [(runs[r][0], i) for r, i in in_gaps if r not in reported]
    assert not missing or lost_logged, f"runs made while no agent ran, exported by none: {missing[:10]}"
    assert last.stop() == 0
    assert not os.path.exists(pin_dir), "an orderly stop with the default configuration left pins"


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")     # utime + stime


def _pipe_fill(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def _marked_execs(lines: list[str], marker: str) -> int:
    return sum(1 for line in lines if marker in line and '"process_exec"' in line)


def test_what_a_killed_agent_read_but_had_not_exported_the_next_one_exports(tmp_path, pin_dir):
    """A kill -9 while one exporter is behind (stdout into a pipe nobody
    reads) and the other (the file) is not: the ring space of what was read
    stays taken until every exporter wrote it, so the next agent reads it
    again; its stdout exporter writes what the last one's never did, its file
    exporter (same file) skips what the last one's wrote.  Each once."""
    fifo = tmp_path / "stdout.fifo"
    os.mkfifo(fifo)
    export = tmp_path / "export.json"                        # both agents' file exporter
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)     # holds the pipe open, never reads
    first = None
    try:
        (tmp_path / "agent0").mkdir()
        first = RunningAgent(tmp_path / "agent0", "--export-file", str(export), env={"TETRAHOST_PIN_DIR": pin_dir},
                             stdout_path=fifo, agent_config="export_hold_seconds = 600")
        filler = f"th-fill-{uuid.uuid4().hex[:10]}"
        deadline = time.monotonic() + 60
        while _pipe_fill(reader) < 60000:                    # the stdout exporter now blocks in write()
            assert time.monotonic() < deadline, f"the pipe holds only {_pipe_fill(reader)} bytes"
            for _ in range(20):
                subprocess.run(["/bin/true", filler], check=True)
        for _ in range(200):        # over 64 KiB held: the kernel then wakes the ring's readers
            subprocess.run(["/bin/true", filler, "x" * 512], check=True)
        marker = f"th-held-{uuid.uuid4().hex[:10]}"
        for _ in range(3):
            subprocess.run(["/bin/true", marker], check=True)
        deadline = time.monotonic() + 20 * SLOWDOWN
        while _marked_execs(export.read_text().splitlines(), marker) < 3:
            assert time.monotonic() < deadline and first.proc.poll() is None, "the file never got the 3 execs"
            time.sleep(0.05)
        # Many loop turns (0.1 s each) later: an agent that gave ring space back
        # as it read, or on its next turn (export_hold_seconds = 0), has by now.
        # Meanwhile it waits without spinning: the ring's map fd stays readable
        # while read records are held, so a loop that watched it would spin.
        cpu = _cpu_seconds(first.proc.pid)
        time.sleep(1.0)
        busy = _cpu_seconds(first.proc.pid) - cpu
        assert busy < 0.25, f"the agent used {busy:.2f} s of CPU in 1 s while holding records"
        first.proc.kill()                                    # read and written to the file, not to stdout
        first.proc.wait()
        (tmp_path / "agent1").mkdir()
        stdout = tmp_path / "agent1" / "stdout.json"
        second = RunningAgent(tmp_path / "agent1", "--export-file", str(export), env={"TETRAHOST_PIN_DIR": pin_dir},
                              stdout_path=stdout)
        try:
            log = second.log_text()
            assert "(g1): adopted" in log, log
            assert "not written twice" in log, log          # the file exporter's overlap, said
            settle = f"th-settle-{uuid.uuid4().hex[:10]}"
            subprocess.run(["/bin/true", settle], check=True)
            deadline = time.monotonic() + 20 * SLOWDOWN
            while _marked_execs(export.read_text().splitlines(), settle) < 1 \
                    or _marked_execs(stdout.read_text().splitlines(), settle) < 1:
                assert time.monotonic() < deadline, f"the settle exec never came out\n{second.log_text()}"
                time.sleep(0.05)
            in_stdout = _marked_execs(stdout.read_text().splitlines(), marker)
            in_file = _marked_execs(export.read_text().splitlines(), marker)
            assert in_stdout == 3, f"the next agent's stdout has {in_stdout} of the 3 held execs\n{log}"
            assert in_file == 3, f"the file has the 3 held execs {in_file} times over (written again)"
        finally:
            second.stop()
    finally:
        if first is not None and first.proc.poll() is None:     # a failure before the kill
            first.proc.kill()
            first.proc.wait()
        os.close(reader)


def test_policy_changed_or_deleted_while_down_takes_effect(tmp_path, pin_dir, miner):
    binary, policy, policy_file = miner
    other = tmp_path / "xmrig-other"
    shutil.copy("/bin/true", other)
    other_file = tmp_path / "other.yaml"
    other_file.write_text(_kill_policy(policy + "-other", str(other)))
    agent = _start(tmp_path, 0, pin_dir, "--policy", str(policy_file), "--policy", str(other_file))
    agent.proc.kill()
    agent.proc.wait()
    assert _run(binary) == -9 and _run(str(other)) == -9, "no enforcement while no agent runs"
    third = tmp_path / "xmrig-third"
    shutil.copy("/bin/true", third)
    policy_file.write_text(_kill_policy(policy, str(third)))        # edited: kills another binary now
    other_file.unlink()                                             # deleted
    agent = _start(tmp_path, 1, pin_dir, "--policy", str(policy_file))
    try:
        log = agent.log_text()
        assert "0 hooks adopted, 1 loaded fresh" in log, log
        assert "pinned version removed" in log, log
        assert _run(binary) == 0, "the edited policy still kills the old binary"
        assert _run(str(other)) == 0, "the deleted policy still enforces"
        assert _run(str(third)) == -9, "the edited policy does not kill its new binary"
    finally:
        agent.stop()


def test_corrupted_manifest_is_replaced_not_trusted(tmp_path, pin_dir, miner):
    from tetrahost.bpf import pinned
    binary, _, policy_file = miner
    os.makedirs(pin_dir)
    pinned.write_blob(os.path.join(pin_dir, "manifest"), b'{"magic": "someone-else"}')
    agent = _start(tmp_path, 0, pin_dir, "--policy", str(policy_file))
    try:
        assert "manifest is not trusted" in agent.log_text()
        assert _run(binary) == -9
        agent.proc.kill()
        agent.proc.wait()
        agent = _start(tmp_path, 1, pin_dir, "--policy", str(policy_file))
        assert "1 hooks adopted" in agent.log_text(), "the replaced manifest was not adopted next time"
    finally:
        agent.stop()


def test_cleanup_leaves_nothing_of_ours(tmp_path, pin_dir, miner):
    binary, _, policy_file = miner
    agent = _start(tmp_path, 0, pin_dir, "--policy", str(policy_file))
    agent.proc.kill()
    agent.proc.wait()
    progs, maps = _pinned_ids(pin_dir)
    assert progs and maps and _run(binary) == -9
    rc = subprocess.run([os.sys.executable, "-m", "tetrahost.cli.main", "cleanup", "--pin-dir", pin_dir],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert not os.path.exists(pin_dir)
    # the kernel frees a map whose last reference is gone from a work queue:
    # wait for that (a map still held by anything of ours never goes)
    deadline = time.monotonic() + 20
    while True:
        live_progs, live_maps = _live_ids()
        if not (progs | maps) & (live_progs | live_maps) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not progs & live_progs, f"programs left: {progs & live_progs}"
    assert not maps & live_maps, f"maps left: {maps & live_maps}"
    assert _run(binary) == 0


def _next_build(tmp_path) -> str:
    """The BPF objects of "another build": the same programs with one more,
    unloaded, ELF section, so their hash (the build id) differs as a new
    release's would."""
    from tetrahost.sensors.objects import find_object
    out = tmp_path / "next-build"
    out.mkdir()
    note = tmp_path / "note"
    note.write_text("next build\n")
    src = find_object("generic").parent
    for obj in src.glob("*.bpf.o"):
        subprocess.run(["llvm-objcopy", f"--add-section=.tetrahost.next={note}", str(obj), str(out / obj.name)],
                       check=True)
    return str(out)


def test_new_build_takes_over_without_a_gap_a_loss_or_a_duplicate(tmp_path, pin_dir, miner):
    """An upgrade: the next agent's objects are another build, so it loads a new
    generation beside the pinned one (both enforce for a moment) and then
    removes the old one.  What the old programs wrote meanwhile, and while no
    agent ran, is read from the old ring buffer: every run reported once."""
    binary, policy, policy_file = miner
    # A second policy on the same hook, loaded first by the old agent and last
    # by the new one: the two generations number their hooks differently, and
    # the old generation's kills must still be reported as the kill policy's.
    other = f"pin-watch-{uuid.uuid4().hex[:10]}"
    other_file = tmp_path / f"{other}.yaml"
    other_file.write_text(_watch_policy(other, str(tmp_path / "never-run")))
    first = _start(tmp_path, 0, pin_dir, "--policy", str(other_file), "--policy", str(policy_file))
    runs: list[tuple[int, int]] = []             # (pid, return code)
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            runs.append(_run_pid(binary))
            time.sleep(0.003)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    second = None
    try:
        time.sleep(0.3)
        first.proc.kill()
        first.proc.wait()
        time.sleep(0.3)                              # runs while no agent runs
        d = tmp_path / "agent1"
        d.mkdir()
        second = RunningAgent(d, "--policy", str(policy_file), "--policy", str(other_file),
                              env={"TETRAHOST_PIN_DIR": pin_dir, "TETRAHOST_BPF_DIR": _next_build(tmp_path)},
                              export_path=first.events_path)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
        if second is None and first.proc.poll() is None:
            first.proc.kill()
    try:
        final, _ = _run_pid(binary)
        second.wait_line("KPROBE_ACTION_SIGKILL", _killed(final))
        second.settle()
        log = second.log_text()
        assert "pinned by another build" in log and "0 hooks adopted, 2 loaded fresh" in log, log
        assert "records of the replaced generation read" in log, log

        assert len(runs) > 50, "the probe loop hardly ran"
        assert not [pid for pid, rc in runs if rc != -9], "a miner run was not killed"
        reported: dict[int, int] = {}
        for pid in _kills(second, policy):          # both agents' file
            reported[pid] = reported.get(pid, 0) + 1
        mislabeled = _kills(second, other)
        assert not mislabeled, f"kills reported under the other policy: {mislabeled[:10]}"
        dups = {pid: c for pid, c in reported.items() if c > 1}
        assert not dups, f"runs reported killed more than once: {dups}"
        missing = [n for n, _ in runs if n not in reported]
        assert not missing, f"{len(missing)} of {len(runs)} runs reported by no agent: {missing[:10]}\n{log}"
    finally:
        code = second.stop()
    assert code == 0
