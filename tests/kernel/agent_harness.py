"""Runs the real agent (`tetrahost run`) as a subprocess for kernel tests.

The agent writes JSON lines to a file; tests start it, wait for its "ready"
log line, run a workload, wait for the events they expect, stop it with
SIGINT and read every event back.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tetrahost.export.conformance import validate_line

REPO = pathlib.Path(__file__).resolve().parents[2]
# The Debian guest of tests/vm is an emulated CPU: everything is slower; waits
# stay bounded so that a broken agent fails a test in minutes, not hangs CI.
SLOWDOWN = 5 if os.environ.get("TETRAHOST_IN_VM") == "1" else 1
# In the emulated guest a spare hook object (runtime/manager.py WarmPool)
# costs tens of seconds of verifier time in the background of every agent:
# the VM tests do not need fast reloads, they need the CPU.
_NO_SPARES = {"TETRAHOST_POLICY_SPARES": "0"} if SLOWDOWN > 1 else {}


def require_root_and_bpf():
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    if not (REPO / "build" / "bpf" / "process.bpf.o").is_file():
        pytest.fail("build/bpf/process.bpf.o is missing: run `make build`")


def private_pin_dir() -> str:
    return f"/sys/fs/bpf/tetrahost-test-{uuid.uuid4().hex[:12]}"


class RunningAgent:
    def __init__(self, tmp_path: pathlib.Path, *extra_args: str, env: dict | None = None,
                 config: str = "", stdout_path: pathlib.Path | None = None, metrics_config: str = "",
                 agent_config: str = "", export_path: pathlib.Path | None = None):
        """env: variables added to the agent's environment; config: TOML keys
        added to the [export] table of the private configuration (metrics_config:
        to its [metrics] table, agent_config: to its [agent] table); export_path:
        the export file (default: events.json in tmp_path; agents in turn may
        share one, as a host's agents do across restarts); stdout_path:
        export to stdout too, into this file."""
        require_root_and_bpf()
        self.events_path = export_path or tmp_path / "events.json"
        self.log_path = tmp_path / "agent.log"
        self._log = open(self.log_path, "w+")
        out = open(stdout_path, "wb") if stdout_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tetrahost.cli.main", "run", "--stdout" if out else "--no-stdout",
             "--config", str(self._private_config(tmp_path, config, metrics_config, agent_config)),
             "--export-file", str(self.events_path), *extra_args,
             *([] if "--socket" in extra_args else ["--no-socket"])],
            stdout=out or subprocess.DEVNULL, stderr=self._log, cwd=REPO,
            env={**os.environ, **_NO_SPARES, **(env or {})})
        if out:
            out.close()
        self._wait_for(lambda: "tetrahost ready" in self.log_text(), 30 * SLOWDOWN, "the agent to report ready")

    @staticmethod
    def _private_config(tmp_path: pathlib.Path, extra: str = "", metrics: str = "", agent: str = "") -> pathlib.Path:
        """A configuration of the agent's own for each test: no rotation of the
        export file (tests read every event from one file: the default keeps
        5 x 10 MiB, which a busy host fills in seconds), an empty private
        policy directory, no metrics port (agents of several tests would
        clash on :2112), export.host_fields on (tests check the matched
        selector, monitor details...: they are in the "tetrahost" member,
        which stop() checks like the rest), export.process_cred and
        process_ns on (tests read a process's namespaces and credentials;
        Tetragon and the product leave them out by default), and a pin
        directory of its own
        (agents of other tests must neither adopt nor remove its pins;
        TETRAHOST_PIN_DIR in env wins, for tests of several agents in turn).
        Flags given by a test still
        override it."""
        policies = tmp_path / "policies.d"
        policies.mkdir(exist_ok=True)
        conf = tmp_path / "tetrahost-test.toml"
        conf.write_text(f'[agent]\npolicy_dir = "{policies}"\npin_dir = "{private_pin_dir()}"\n{agent}\n'
                        f'[export]\nhost_fields = true\nprocess_cred = true\nprocess_ns = true\n{extra}\n'
                        '[export.file]\nmax_size_mb = 100000\nmax_backups = 0\n'
                        '[metrics]\nenabled = false\n' + metrics + '\n')
        return conf

    def log_text(self) -> str:
        return self.log_path.read_text()

    def _wait_for(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}) waiting for {what}:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; agent log:\n{self.log_text()}")

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        with open(self.events_path, "rb") as f:
            return [json.loads(line) for line in f if line.endswith(b"\n")]

    def wait_events(self, pred, count: int, timeout: float = 20) -> list[dict]:
        """Wait until at least `count` events satisfy pred; return those."""
        timeout *= SLOWDOWN
        self._wait_for(lambda: len([e for e in self.events() if pred(e)]) >= count, timeout,
                       f"{count} matching events")
        return [e for e in self.events() if pred(e)]

    def wait_line(self, needle: str, pred=lambda e: True, timeout: float = 20) -> dict:
        """Wait for an event whose line contains needle and that satisfies pred;
        reads the file once, as it grows, keeping nothing (an export file of
        several agents in turn is tens of MB: parsing it whole on every poll
        took a guest's memory)."""
        found: list[dict] = []
        offset, partial = 0, b""

        def scan() -> bool:
            nonlocal offset, partial
            if not self.events_path.exists():
                return False
            with open(self.events_path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                if needle.encode() in line:
                    event = json.loads(line)
                    if pred(event):
                        found.append(event)
                        return True
            return False
        self._wait_for(scan, timeout * SLOWDOWN, f"an event with {needle!r}")
        return found[0]

    def settle(self) -> None:
        """Return once every event of what ran before this call is in the
        file, so a test can check that something produced NO event: a
        marked exec goes through the same ring buffer (consumed and written
        in order), so anything the kernel emitted earlier is written before
        its event is."""
        self._settles = getattr(self, "_settles", 0) + 1
        mark = f"th-settle-{os.getpid()}-{self._settles}"
        subprocess.run(["/bin/true", mark], check=True)
        self.wait_line(mark, lambda e: "process_exec" in e and e["process_exec"]["process"].get("arguments") == mark)

    def check_conformance(self) -> None:
        """Every line the agent exported parses with Tetragon's schema
        (tetrahost/export/conformance.py): unknown field, wrong type, unknown
        enum value = failure.  The "tetrahost" member of export.host_fields is
        checked against its own documented schema."""
        if not self.events_path.exists():
            return
        bad = []
        with open(self.events_path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    continue
                errors = validate_line(line, allow_host_fields=True)
                if errors:
                    bad.append(f"{self.events_path}:{n}: {'; '.join(errors[:5])}\n  {line[:600]!r}")
        assert not bad, f"{len(bad)} exported line(s) do not parse with Tetragon's schema:\n" + "\n".join(bad[:10])

    def stop(self) -> int:
        """Stop the agent (SIGINT) and check every line it exported (check_conformance)."""
        stopped_here = self.proc.poll() is None or not self._log.closed
        self._stop()
        if stopped_here:
            self.check_conformance()
        return self.proc.returncode

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20 * SLOWDOWN)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"agent did not stop on SIGINT:\n{self.log_text()}")
        self._log.close()


def execs_of(binary: str):
    return lambda e: "process_exec" in e and e["process_exec"]["process"]["binary"] == binary


def exits_of(binary: str):
    return lambda e: "process_exit" in e and e["process_exit"]["process"]["binary"] == binary


# ---- policies for an agent under test ------------------------------------------

def policy_text(name: str, body: str) -> str:
    """A TracingPolicy document; body: the YAML under `spec:`, starting with a newline."""
    return f"apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:{body}"


def start_with_policies(tmp_path_factory, policies: dict[str, str], env=None) -> RunningAgent:
    """An agent with one policy file per entry of policies (name -> spec body)."""
    d = tmp_path_factory.mktemp("policies")
    args = []
    for name, body in policies.items():
        (d / f"{name}.yaml").write_text(policy_text(name, body))
        args += ["--policy", str(d / f"{name}.yaml")]
    return RunningAgent(tmp_path_factory.mktemp("agent"), *args, env=env)


_HOST_PER_PROCESS = ("process", "parent", "args", "return")


def with_host(event: dict) -> dict:
    """The event's body (process_kprobe/...) with the hook-level members of its
    "tetrahost" object (selector, signal, monitor, socket_owner, return_value...;
    export.host_fields, on in these tests) beside Tetragon's fields, as tests
    read them."""
    body = next(v for k, v in event.items() if k.startswith("process_") and isinstance(v, dict))
    host = {k: v for k, v in event.get("tetrahost", {}).items() if k not in _HOST_PER_PROCESS}
    return {**body, **host}


def bodies_of(event: dict, name: str) -> list[dict]:
    """The bodies of one exported event that are the policy's (none for others), with_host."""
    return [with_host(event) for k, v in event.items()
            if k.startswith("process_") and isinstance(v, dict) and v.get("policy_name") == name]


def policy_events(agent: RunningAgent, name: str, count: int = 0) -> list[dict]:
    """The bodies (process_kprobe/_lsm/_tracepoint, with_host) of the events of policy
    `name`, after waiting for at least count of them and for every event of
    what ran before (settle): a wrong extra event is among them."""
    if count:
        agent.wait_events(lambda e: bool(bodies_of(e, name)), count)
    agent.settle()
    return [b for e in agent.events() for b in bodies_of(e, name)]
