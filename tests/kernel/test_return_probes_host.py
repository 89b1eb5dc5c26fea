"""Return probes (`return: true`, returnArg, matchReturnArgs) on the kernel the tests run on.

Without kprobes (this machine) a syscall hook's entry is raw_syscalls/sys_enter
and its return half sys_exit, both filtered to the syscall's number; with
kprobes, a kretprobe (kernel_expect says which).  The policy is
Tetragon's openat_write example with our own paths: only a successful
(fd > 0, matchReturnArgs) write-open of the watched file is posted, and the
event carries the return value.
"""
from __future__ import annotations

import base64
import os
import pathlib
import threading

import pytest

from agent_harness import RunningAgent
from kernel_expect import syscall_return_method

pytestmark = pytest.mark.kernel

BASE = "/tmp/thret"
WATCHED = f"{BASE}/watched"

POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: openat-write-ok
spec:
  kprobes:
  - call: sys_openat
    return: true
    syscall: true
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    - index: 2
      type: int
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 1
        operator: Prefix
        values: ["{WATCHED}"]
      - index: 2
        operator: Mask
        values: ["64", "1", "2"]
      matchReturnArgs:
      - index: 0
        operator: GT
        values: ["0"]
"""


READ_POLICY = f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: read-return-copy
spec:
  kprobes:
  - call: sys_read
    return: true
    syscall: true
    args:
    - index: 0
      type: fd
    - index: 1
      type: char_buf
      returnCopy: true
    - index: 2
      type: size_t
    returnArg:
      index: 0
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/read-"]
"""


def try_open(path: str, flags: int) -> int:
    """The return value openat gave (negative errno on failure)."""
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        return -exc.errno
    os.close(fd)
    return fd


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    os.makedirs(BASE, exist_ok=True)
    d = tmp_path_factory.mktemp("ret")
    (d / "p.yaml").write_text(POLICY)
    (d / "read.yaml").write_text(READ_POLICY)
    a = RunningAgent(d, "--policy", str(d / "p.yaml"), "--policy", str(d / "read.yaml"))
    assert "not active" not in a.log_text()
    yield a
    a.stop()


def kprobe_events(agent, suffix: str) -> list[dict]:
    return [e["process_kprobe"] for e in agent.events()
            if e.get("process_kprobe", {}).get("args", [{}, {}])[1].get("string_arg") == WATCHED + suffix]


def test_attaches_entry_and_exit_halves(agent):
    log = agent.log_text()
    assert syscall_return_method("openat") in log and syscall_return_method("read") in log, log


def test_posted_only_when_the_return_value_matches(agent):
    ok = try_open(WATCHED + "-ok", os.O_WRONLY | os.O_CREAT)
    failed = try_open(WATCHED + "-missing/x", os.O_WRONLY | os.O_CREAT)   # ENOENT: return -2
    readonly = try_open(WATCHED + "-ok", os.O_RDONLY)                    # flags do not match
    assert ok > 0 and failed == -2 and readonly > 0
    ev = agent.wait_events(lambda e: "process_kprobe" in e and
                           e["process_kprobe"]["args"][1].get("string_arg") == WATCHED + "-ok", 1)[0]
    kp = ev["process_kprobe"]
    assert kp["return"] == {"int_arg": ok}
    assert kp["args"][2]["int_arg"] & os.O_CREAT
    assert kp["process"]["pid"] == os.getpid()
    # the failed open matched the arguments but not matchReturnArgs: never posted
    try_open(WATCHED + "-ok", os.O_WRONLY)            # a later event, so the pipeline has caught up
    agent.wait_events(lambda e: "process_kprobe" in e, 2)
    assert kprobe_events(agent, "-missing/x") == []
    assert len(kprobe_events(agent, "-ok")) == 2


def test_each_thread_gets_its_own_return_value(agent):
    """Events are parked per thread: threads opening at the same time each
    get their own fd back (kept open until all are done, so all differ)."""
    barrier = threading.Barrier(4)
    fds, tids = {}, {}

    def opener(name):
        barrier.wait()
        fds[name] = os.open(f"{WATCHED}-{name}", os.O_WRONLY | os.O_CREAT, 0o600)
        tids[name] = threading.get_native_id()
        barrier.wait()

    threads = [threading.Thread(target=opener, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for fd in fds.values():
        os.close(fd)
    assert len(set(fds.values())) == 4
    evs = agent.wait_events(lambda e: "process_kprobe" in e and
                            e["process_kprobe"]["args"][1].get("string_arg", "").startswith(WATCHED + "-t"), 4)
    by_name = {e["process_kprobe"]["args"][1]["string_arg"]: e["process_kprobe"] for e in evs}
    for name, fd in fds.items():
        kp = by_name[f"{WATCHED}-{name}"]
        assert kp["return"] == {"int_arg": fd}
        assert kp["process"]["tid"] == tids[name]


def test_return_copy_holds_the_bytes_the_call_read(agent):
    """returnCopy: the buffer is empty at the entry of read(2); the bytes in
    the event are the ones it returned, as many as it returned."""
    content = b"returnCopy: read at the return\n"
    path = f"{BASE}/read-a"
    pathlib.Path(path).write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        first = os.read(fd, 4096)         # all of it
        eof = os.read(fd, 4096)           # 0 bytes: nothing to copy
    finally:
        os.close(fd)
    assert first == content and eof == b""
    evs = agent.wait_events(lambda e: e.get("process_kprobe", {}).get("policy_name") == "read-return-copy", 2)
    evs = [e["process_kprobe"] for e in evs]
    assert [e["args"][0]["file_arg"]["path"] for e in evs] == [path, path]
    assert [e["return"]["int_arg"] for e in evs] == [len(content), 0]
    assert base64.b64decode(evs[0]["args"][1]["bytes_arg"]) == content
    assert base64.b64decode(evs[1]["args"][1].get("bytes_arg", "")) == b""
    assert evs[0]["args"][2] == {"size_arg": "4096"}     # uint64: a JSON string
