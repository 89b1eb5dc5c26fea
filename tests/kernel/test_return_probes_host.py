"""Return probes (`return: true`, returnArg, matchReturnArgs, returnCopy) on the
kernel the tests run on (this machine's, and every guest of tests/vm).

A syscall hook's return half is raw_syscalls/sys_exit without kprobes (this
machine), a kretprobe (or fexit) on the syscall's function with them
(kernel_expect says which).  A kernel function's return (security_file_permission)
needs kprobe/fentry and kretprobe/fexit; an Override's errno seen by the return
half needs BPF-LSM, fmod_ret or bpf_override_return as well: those policies are
loaded, and their tests run, where the probed features allow them.

One agent for the module (an agent start costs seconds under emulation);
paths under BASE are private to this module, and each policy proves what it
posts and what it leaves alone.  Policies: tests/policies/return-*.yaml.in.
"""
from __future__ import annotations

import base64
import errno
import os
import pathlib
import threading

import pytest

from agent_harness import REPO, RunningAgent, policy_events
from kernel_expect import features, not_applicable, syscall_return_method

pytestmark = pytest.mark.kernel

BASE = "/tmp/thret"
WATCHED = f"{BASE}/watched"
POLICY_DIR = REPO / "tests" / "policies"


def policy(template: str, name: str, prefix: str) -> str:
    return (POLICY_DIR / f"{template}.yaml.in").read_text().format(name=name, prefix=prefix)


def function_return_possible() -> bool:
    f = features()
    return (f.kprobe or f.fentry) and (f.kretprobe or f.fexit)


def override_return_possible() -> bool:
    f = features()
    return (f.lsm or f.fmod_ret or (f.kprobe and f.override_return)) and (f.kretprobe or f.fexit)


def function_return_method(function: str) -> tuple[str, str]:
    """The entry and the return half of a plain kernel-function hook."""
    f = features()
    entry = f"kprobe {function}" if f.kprobe else f"fentry {function}"
    return entry, f"return value from {'kretprobe' if f.kretprobe else 'fexit'} {function}"


def policies() -> dict[str, str]:
    """name -> policy text: what this kernel can run."""
    found = {"openat-write-ok": policy("return-openat-write", "openat-write-ok", WATCHED),
             "read-return-copy": policy("return-read-copy", "read-return-copy", f"{BASE}/read-")}
    if function_return_possible():
        found["ret-permission"] = policy("return-file-permission", "ret-permission", f"{BASE}/perm-")
    if override_return_possible():
        found["ret-deny"] = policy("return-deny-open", "ret-deny", f"{BASE}/deny-")
    return found


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
    args = []
    for name, text in policies().items():
        (d / f"{name}.yaml").write_text(text)
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(d, *args)
    assert "not active" not in a.log_text().lower(), a.log_text()
    yield a
    a.stop()


def kprobe_events(agent, suffix: str) -> list[dict]:
    return [e["process_kprobe"] for e in agent.events()
            if e.get("process_kprobe", {}).get("args", [{}, {}])[1].get("string_arg") == WATCHED + suffix]


def test_attaches_entry_and_exit_halves(agent):
    log = agent.log_text()
    assert syscall_return_method("openat") in log and syscall_return_method("read") in log, log
    if function_return_possible():
        entry, ret = function_return_method("security_file_permission")
        assert f"{entry}; {ret}" in log, log
    if override_return_possible():
        assert f"return value from {'kretprobe' if features().kretprobe else 'fexit'} security_file_open" in log, log


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
    second = try_open(WATCHED + "-ok", os.O_WRONLY)            # a later event, so the pipeline has caught up
    evs = policy_events(agent, "openat-write-ok", 2)
    assert kprobe_events(agent, "-missing/x") == []
    assert [(e["args"][1]["string_arg"], e["return"]["int_arg"]) for e in evs] == \
        [(WATCHED + "-ok", ok), (WATCHED + "-ok", second)]


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
    evs = policy_events(agent, "read-return-copy", 2)
    assert [e["args"][0]["file_arg"]["path"] for e in evs] == [path, path]
    assert [e["return"]["int_arg"] for e in evs] == [len(content), 0]
    assert base64.b64decode(evs[0]["args"][1]["bytes_arg"]) == content
    assert base64.b64decode(evs[1]["args"][1].get("bytes_arg", "")) == b""
    assert evs[0]["args"][2] == {"size_arg": "4096"}     # uint64: a JSON string


def test_kernel_function_return_value(agent):
    if not function_return_possible():
        not_applicable("a kernel function's return needs kprobe/fentry and kretprobe/fexit")
    pathlib.Path(f"{BASE}/perm-a").write_text("x")     # open for write, then write: 0 each
    evs = policy_events(agent, "ret-permission", 1)
    assert all(e["return"] == {"int_arg": 0} for e in evs)
    assert {e["args"][0]["file_arg"]["path"] for e in evs} == {f"{BASE}/perm-a"}


def test_override_errno_is_the_return_value(agent):
    if not override_return_possible():
        not_applicable("Override needs BPF-LSM, fmod_ret or bpf_override_return, and a kretprobe or fexit")
    with pytest.raises(PermissionError):
        open(f"{BASE}/deny-x", "w")
    (ev,) = policy_events(agent, "ret-deny", 1)
    assert ev["action"] == "KPROBE_ACTION_OVERRIDE"
    assert ev["return"] == {"int_arg": -errno.EPERM}


def test_fexit_where_kprobes_are_not_used(tmp_path):
    """The kernel-function hook through fentry + fexit (kprobes masked where
    the kernel has them: the BPF trampolines are real)."""
    f = features()
    if not (f.fentry and f.fexit):
        not_applicable("no fentry/fexit (tetrahost probe)")
    (tmp_path / "fexit.yaml").write_text(policy("return-file-permission", "ret-fexit", f"{BASE}/fexit-"))
    a = RunningAgent(tmp_path, "--policy", str(tmp_path / "fexit.yaml"),
                     env={"TETRAHOST_AVOID_FEATURES": "kprobe,kretprobe"})
    try:
        assert "fentry security_file_permission" in a.log_text()
        assert "return value from fexit security_file_permission" in a.log_text()
        os.makedirs(BASE, exist_ok=True)
        pathlib.Path(f"{BASE}/fexit-a").write_text("x")
        evs = policy_events(a, "ret-fexit", 1)
        assert evs and all(e["return"] == {"int_arg": 0} for e in evs)
        assert {e["args"][0]["file_arg"]["path"] for e in evs} == {f"{BASE}/fexit-a"}
    finally:
        a.stop()
