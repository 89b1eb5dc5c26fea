"""Events and agent logs in a real journald, read back with journalctl.

PID 1 is not systemd on the test machines; systemd-journald started by hand
still serves /run/systemd/journal/socket, and `journalctl FIELD=value` reads
the entries back.  The fixture starts it only when no journald is listening
and stops it (by PID) afterwards.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid

import pytest

from agent_harness import RunningAgent
from tetrahost.events.meta import EventMeta
from tetrahost.export import journald

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

JOURNALD = "/lib/systemd/systemd-journald"


@pytest.fixture(scope="module")
def journal():
    if os.geteuid() != 0:
        pytest.skip("needs root to run systemd-journald")
    if not shutil.which("journalctl") or not os.path.exists(JOURNALD):
        pytest.fail("systemd-journald / journalctl missing (Debian package systemd)")
    proc = None
    if not journald.journal_available():
        proc = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not journald.journal_available():
            assert proc.poll() is None, "systemd-journald exited"
            assert time.monotonic() < deadline, "systemd-journald did not open its socket"
            time.sleep(0.05)
    yield
    if proc is not None:
        proc.terminate()
        proc.wait(10)


def read_back(*matches: str, count: int = 1, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["journalctl", "--no-pager", "--all", "-o", "json", *matches],
                             capture_output=True, text=True).stdout
        entries = [json.loads(x) for x in out.splitlines() if x.strip()]
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def event(exec_id, kind="process_exec", binary="/usr/bin/curl", **extra):
    meta = EventMeta(kind=kind, pid=4242, binary=binary, exec_id=exec_id, ktime=1, unit="ssh.service", **extra)
    body = {"process": {"exec_id": exec_id, "pid": 4242, "binary": binary, "arguments": "https://example.org"}}
    if kind == "process_kprobe":
        body.update(function_name="security_bprm_check", policy_name=extra.get("policy", ""),
                    action="KPROBE_ACTION_SIGKILL")
    line = json.dumps({kind: body, "node_name": "host1", "time": "2024-01-01T00:00:00Z"}, separators=(",", ":"))
    return line, meta


def test_events_become_structured_entries(journal):
    tag = uuid.uuid4().hex
    exec_line, exec_meta = event(f"exec-{tag}")
    kill_line, kill_meta = event(f"kill-{tag}", "process_kprobe", "/tmp/xmrig", policy="block-cryptominers",
                                 hook="security_bprm_check", action="SIGKILL", enforced=True)
    sink = journald.JournaldSink()
    sink.write_events([(exec_line, exec_meta), (kill_line, kill_meta)])
    sink.close()
    assert sink.stats.events == 2 and sink.stats.dropped == 0

    (e,) = read_back(f"TETRAGON_EXEC_ID=exec-{tag}")
    assert e["MESSAGE"] == "🚀 process host1 /usr/bin/curl https://example.org"
    assert e["PRIORITY"] == "6" and e["SYSLOG_IDENTIFIER"] == "tetrahost"
    assert (e["TETRAGON_EVENT"], e["TETRAGON_BINARY"], e["TETRAGON_PID"], e["TETRAGON_UNIT"]) == \
        ("PROCESS_EXEC", "/usr/bin/curl", "4242", "ssh.service")
    assert json.loads(e["TETRAGON_JSON"]) == json.loads(exec_line)
    assert "TETRAGON_ACTION" not in e and "TETRAGON_POLICY" not in e

    (k,) = read_back(f"TETRAGON_EXEC_ID=kill-{tag}")
    assert k["PRIORITY"] == "4"                       # an enforcement is a warning
    assert (k["TETRAGON_ACTION"], k["TETRAGON_POLICY"], k["TETRAGON_HOOK"]) == \
        ("SIGKILL", "block-cryptominers", "security_bprm_check")
    assert "💥 SIGKILL" in k["MESSAGE"]
    # `journalctl TETRAGON_ACTION=SIGKILL` finds it
    assert any(x["TETRAGON_EXEC_ID"] == f"kill-{tag}" for x in read_back("TETRAGON_ACTION=SIGKILL"))


def test_newlines_and_huge_events(journal):
    tag = uuid.uuid4().hex
    nl_line, nl_meta = event(f"nl-{tag}", binary="/tmp/evil\nname")
    big_line, big_meta = event(f"big-{tag}")
    big = json.loads(big_line)
    # more than one datagram may hold (net.core.wmem_max): sent as a memfd
    wmem_max = int(open("/proc/sys/net/core/wmem_max").read())
    big["process_exec"]["process"]["arguments"] = "x" * max(1_000_000, wmem_max + 65536)
    big_line = json.dumps(big, separators=(",", ":"))
    sink = journald.JournaldSink()
    sink.write_events([(nl_line, nl_meta), (big_line, big_meta)])
    sink.close()
    assert sink.stats.events == 2, sink.stats
    (n,) = read_back(f"TETRAGON_EXEC_ID=nl-{tag}")
    assert n["TETRAGON_BINARY"] == "/tmp/evil\nname"
    (b,) = read_back(f"TETRAGON_EXEC_ID=big-{tag}")
    assert len(b["TETRAGON_JSON"]) == len(big_line)


@pytest.mark.parametrize("native", [True, False])
def test_agent_logs_to_the_journal(journal, native):
    tag = uuid.uuid4().hex
    handler = journald.NativeJournalHandler() if native else journald.log_handler()
    logger = logging.getLogger(f"tetrahost.test.{tag}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("journal log test %s", tag)
    finally:
        logger.removeHandler(handler)
        handler.close()
    entries = [e for e in read_back("SYSLOG_IDENTIFIER=tetrahost", "PRIORITY=4", "-n", "200", count=1)
               if tag in e.get("MESSAGE", "")]
    deadline = time.monotonic() + 30
    while not entries and time.monotonic() < deadline:
        time.sleep(0.1)
        entries = [e for e in read_back("SYSLOG_IDENTIFIER=tetrahost", "-n", "500") if tag in e.get("MESSAGE", "")]
    assert entries and entries[0]["PRIORITY"] == "4"


def test_the_agent_writes_its_events_to_the_journal(journal, tmp_path):
    """The real agent, journald export on by default: an exec shows up with its fields."""
    tag = uuid.uuid4().hex
    agent = RunningAgent(tmp_path, "--metrics-address", "off")
    try:
        subprocess.run(["/bin/echo", tag], check=True, stdout=subprocess.DEVNULL)
        agent.wait_events(lambda e: tag in e.get("process_exec", {}).get("process", {}).get("arguments", ""), 1)
        entries = []
        deadline = time.monotonic() + 30
        while not entries and time.monotonic() < deadline:
            entries = [e for e in read_back("TETRAGON_EVENT=PROCESS_EXEC", "TETRAGON_BINARY=/usr/bin/echo",
                                            "-n", "200") if tag in e["MESSAGE"]]
            time.sleep(0.1)
        assert entries, "exec not in the journal"
        e = entries[0]
        assert e["MESSAGE"].startswith("🚀 process ") and e["PRIORITY"] == "6"
        assert json.loads(e["TETRAGON_JSON"])["process_exec"]["process"]["exec_id"] == e["TETRAGON_EXEC_ID"]
    finally:
        assert agent.stop() == 0, agent.log_text()
