"""char_buf arguments read from user memory in the kernel, on this machine.

A sys_write hook (here through the raw_syscalls/sys_enter fallback) with
[int fd, char_buf buf sizeArgIndex 3, size_t count], limited to this test's
pid.  Selector 0 matches the buffer's first bytes with Prefix (the bytes are
matched in the kernel like a string); selector 1 catches a write from a bad
pointer by its count.  Each write says whether it must produce an event.
"""
from __future__ import annotations

import base64
import ctypes
import os

import pytest

from agent_harness import RunningAgent

pytestmark = pytest.mark.kernel

BAD_COUNT = 12345


def policy(pid: int) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: write-bufs
spec:
  kprobes:
  - call: sys_write
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: char_buf
      sizeArgIndex: 3
      label: data
    - index: 2
      type: size_t
    selectors:
    - matchPIDs:
      - operator: In
        values: [{pid}]
      matchArgs:
      - index: 1
        operator: Prefix
        values: ["THBUF-"]
    - matchPIDs:
      - operator: In
        values: [{pid}]
      matchArgs:
      - index: 2
        operator: Equal
        values: ["{BAD_COUNT}"]
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("charbuf")
    (d / "p.yaml").write_text(policy(os.getpid()))
    agent = RunningAgent(d, "--policy", str(d / "p.yaml"))
    try:
        log = agent.log_text()
        assert "not active" not in log, log
        short = b"THBUF-short\n\0tail"
        long = b"THBUF-long:" + bytes(range(256)) * 4
        fd = os.open(d / "out", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, short)
            os.write(fd, b"other write, no match\n")
            os.write(fd, long)
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.write(fd, ctypes.c_void_p(1), BAD_COUNT) == -1      # EFAULT: nothing readable there
        finally:
            os.close(fd)
        events = [e["process_kprobe"] for e in
                  agent.wait_events(lambda e: e.get("process_kprobe", {}).get("policy_name") == "write-bufs", 3)]
        host = [e["tetrahost"] for e in agent.events()
                if e.get("process_kprobe", {}).get("policy_name") == "write-bufs"]
    finally:
        agent.stop()
    return {"fd": fd, "short": short, "long": long, "events": events, "host": host}


def test_exactly_the_matching_writes_are_reported(written):
    assert len(written["events"]) == 3
    assert [h["selector"] for h in written["host"]] == [0, 0, 1]       # export.host_fields
    assert all(e["function_name"] == "sys_write" for e in written["events"])


def test_short_buffer_is_whole_base64_bytes_arg_with_its_label(written):
    ev = written["events"][0]
    short = written["short"]
    assert ev["args"][0] == {"int_arg": written["fd"]}
    assert ev["args"][1] == {"bytes_arg": base64.b64encode(short).decode(), "label": "data"}
    assert ev["args"][2] == {"size_arg": str(len(short))}     # uint64: a JSON string


def test_long_buffer_is_truncated_with_its_original_size(written):
    ev = written["events"][1]
    long = written["long"]
    assert ev["args"][1] == {"truncated_bytes_arg": {"bytes_arg": base64.b64encode(long[:252]).decode(),
                                                     "orig_size": str(len(long))}, "label": "data"}
    assert ev["args"][2] == {"size_arg": str(len(long))}


def test_unreadable_buffer_is_reported_as_a_read_error(written):
    ev = written["events"][2]
    assert ev["args"][1] == {"bytes_arg": "", "label": "data"}
    assert written["host"][2]["args"]["1"] == {"read_error": "CharBufErrorPageFault"}
    assert ev["args"][2] == {"size_arg": str(BAD_COUNT)}
