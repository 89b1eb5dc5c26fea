"""Redaction proven end to end: a secret in argv, in a string argument of a
policy hook and in a char_buf argument never reaches the JSON file, stdout,
journald or a `tetra getevents` stream, while the events themselves do
(with "*****" where the secret was).

The hooks are syscall kprobes (sys_openat's filename as a string, sys_write's
buffer as a char_buf), through the raw_syscalls/sys_enter fallback on this
machine, limited to this test's pid.  The patterns are the shipped defaults
(export.redact_default_secrets) plus one configured filter.
"""
from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import time
import uuid

import pytest

from agent_harness import RunningAgent
from test_control_socket import Stream, wait_streams
from test_journald import journal, read_back  # noqa: F401  (fixture)

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

TAG = uuid.uuid4().hex[:10]
SECRETS = {name: f"{name}{uuid.uuid4().hex}" for name in ("argv", "custom", "string", "buf")}


def policy(pid: int) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: redact-{TAG}
spec:
  kprobes:
  - call: sys_openat
    syscall: true
    args:
    - index: 1
      type: string
    selectors:
    - matchPIDs:
      - operator: In
        values: [{pid}]
      matchArgs:
      - index: 1
        operator: Prefix
        values: ["/tmp/th-redact-{TAG}"]
  - call: sys_write
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: char_buf
      sizeArgIndex: 3
    - index: 2
      type: size_t
    selectors:
    - matchPIDs:
      - operator: In
        values: [{pid}]
      matchArgs:
      - index: 1
        operator: Prefix
        values: ["THRED-{TAG}"]
"""


CONFIG = ("redact_default_secrets = true\n"
          "redaction_filters = [{ redact = ['--db-key[= ](\\S+)'], binary_regex = ['/true$'] }]")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, journal):  # noqa: F811
    d = tmp_path_factory.mktemp("redact")
    (d / "p.yaml").write_text(policy(os.getpid()))
    sock = pathlib.Path(f"/run/tetrahost-test-{TAG}") / "c.sock"
    agent = RunningAgent(d, "--policy", str(d / "p.yaml"), "--socket", str(sock), "--metrics-address", "off",
                         config=CONFIG, stdout_path=d / "stdout.json")
    agent.sock = str(sock)
    stream = None
    try:
        assert "not active" not in agent.log_text(), agent.log_text()
        stream = Stream(agent, "--binary", "true|python")
        wait_streams(agent, 1)
        subprocess.run(["/bin/true", f"--password={SECRETS['argv']}", "--db-key", SECRETS["custom"], TAG],
                       check=True)
        target = f"/tmp/th-redact-{TAG} --password={SECRETS['string']}"
        try:
            os.close(os.open(target, os.O_RDONLY))
        except FileNotFoundError:
            pass
        fd = os.open(d / "out", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"THRED-{TAG} Authorization: Bearer {SECRETS['buf']}\n".encode())
        finally:
            os.close(fd)
        name = f"redact-{TAG}"
        agent.wait_events(lambda e: e.get("process_kprobe", {}).get("policy_name") == name, 2)
        agent.settle()
    finally:
        rc, err = stream.stop() if stream else (0, "")
        agent.stop()
        sock.unlink(missing_ok=True)
        sock.parent.rmdir() if sock.parent.exists() else None
    journal_text = "\n".join(json.dumps(e) for e in journal_entries())
    return {"file": agent.events_path.read_text(), "stdout": (d / "stdout.json").read_text(),
            "stream": "\n".join(json.dumps(e) for e in stream.events), "journal": journal_text,
            "events": agent.events()}


def journal_entries() -> list[dict]:
    """This test's three entries: the exec (its arguments carry TAG) and the two hook events."""
    deadline = time.monotonic() + 30
    while True:
        hooks = read_back(f"TETRAGON_POLICY=redact-{TAG}", count=2)
        execs = [e for e in read_back("TETRAGON_EVENT=PROCESS_EXEC", "TETRAGON_BINARY=/usr/bin/true", count=1)
                 if TAG in e.get("TETRAGON_JSON", "")]
        if (len(hooks) >= 2 and execs) or time.monotonic() > deadline:
            return hooks + execs
        time.sleep(0.2)


def test_the_events_are_exported_with_the_secrets_masked(exported):
    execs = [e["process_exec"]["process"] for e in exported["events"]
             if "process_exec" in e and e["process_exec"]["process"]["binary"] == "/usr/bin/true"
             and TAG in e["process_exec"]["process"].get("arguments", "")]
    assert [p["arguments"] for p in execs] == [f"--password=***** --db-key ***** {TAG}"]
    kp = [e["process_kprobe"] for e in exported["events"]
          if e.get("process_kprobe", {}).get("policy_name") == f"redact-{TAG}"]
    opened = [k["args"][0]["string_arg"] for k in kp if k["function_name"].endswith("openat")]
    assert opened == [f"/tmp/th-redact-{TAG} --password=*****"]
    bufs = [base64.b64decode(k["args"][1]["bytes_arg"]) for k in kp if k["function_name"].endswith("write")]
    assert bufs == [f"THRED-{TAG} Authorization: Bearer *****\n".encode()]


@pytest.mark.parametrize("sink", ["file", "stdout", "journal", "stream"])
def test_no_secret_reaches_any_sink(exported, sink):
    text = exported[sink]
    assert TAG in text, f"{sink}: the test's events are not there at all"
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} secret reached {sink}"
    assert "*****" in text
