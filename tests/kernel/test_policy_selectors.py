"""Selectors evaluated in the kernel, on the kernel the tests run on (this
machine's, and every guest of tests/vm, the lean ones included).

Argument operators and actions: one policy per case, all on the
syscalls/sys_enter_openat tracepoint (every kernel has it).  Each case opens
its own paths under a per-case prefix; the events say which opens each
selector matched, and each case lists what must match AND what must not.

Process selectors in the programs the kernel offers for a kernel function:
security_file_open (kprobe/fentry, or the open family's sys_exit without
them), a syscall hook (kprobe or raw_tp sys_enter), fd_install (kprobe or
fentry only) and an lsmhooks policy (BPF-LSM only): the verifier must accept
them there and they must select the same.  tests/kernel/test_policy_selectors_proc.py
covers every process-selector case on the tracepoint.

One agent for the module, started once (an exec costs ~40 ms and an agent
start seconds under emulation), with every policy this kernel can run.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from agent_harness import RunningAgent, policy_events, policy_text
from kernel_expect import features, not_applicable
from selector_cases import (BASE, BINS_TARGET, CASES, CHANGES, O_CREAT, PROC_POLICIES, SH, policy,
                            process_cases)

pytestmark = pytest.mark.kernel

FUNCTION_HOOK_POLICIES = ("caps-userns", "capch")     # fd_install: no tracepoint stands in


def function_hooks() -> bool:
    f = features()
    return f.kprobe or f.fentry


def do_open(path: str, flags: int) -> None:
    try:
        fd = os.open(path, flags, 0o600)
        os.close(fd)
    except OSError:
        pass


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = pathlib.Path(tempfile.mkdtemp(prefix="thsel-policies-"))
    shutil.rmtree(BASE, ignore_errors=True)
    for name in CASES:
        os.makedirs(f"{BASE}/{name}", exist_ok=True)
    for sub in ("bin", "bins", "follow", "pids", "userns", "capch", "nsch"):
        os.makedirs(f"{BASE}/{sub}", exist_ok=True)
    shutil.copy2("/bin/dash", SH)
    cat = d / "thsel-cat"
    shutil.copy2("/bin/cat", cat)
    for f in ("bins/file", "follow/f.key", "pids/a", "pids/b", "userns/a", "userns/b"):
        pathlib.Path(f"{BASE}/{f}").write_text("x")
    # its descendants are excluded by the "ns-pids" policy's NotIn followForks
    helper = subprocess.Popen(["sh", "-c", f"read go; unshare --pid --fork cat {BASE}/pids/b; true"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    texts = {name: policy(name, selectors) for name, (selectors, _, _) in CASES.items()}
    texts.update({name: policy(name, selectors, options=options)
                  for name, (selectors, options) in process_cases(str(cat)).items()})
    for name, body in PROC_POLICIES.items():
        if name in FUNCTION_HOOK_POLICIES and not function_hooks():
            continue
        texts[name] = policy_text(name, body.replace("HELPER", str(helper.pid)))
    args = []
    for name, text in texts.items():
        (d / f"{name}.yaml").write_text(text)
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    a.helper, a.cat = helper, cat
    for name, (_, opens, _) in CASES.items():
        for suffix, flags in opens:
            do_open(f"{BASE}/{name}/{suffix}", flags)
    yield a
    a.stop()
    if helper.poll() is None:
        helper.kill()
        helper.wait()
    shutil.rmtree(d)
    shutil.rmtree(BASE, ignore_errors=True)


def matched(agent, name: str) -> set[str]:
    out = set()
    for e in agent.events():
        t = e.get("process_tracepoint")
        if t and t["policy_name"] == name:
            out.add(t["args"][0]["string_arg"].rsplit("/", 1)[1])
    return out


@pytest.mark.parametrize("name", CASES)
def test_selector_matches_exactly(agent, name):
    want = CASES[name][2]
    if want:
        agent.wait_events(lambda e: "process_tracepoint" in e and
                          e["process_tracepoint"]["policy_name"] == name, len(want))
    else:   # NoPost: every event of what ran before is written after a later marked one
        agent.settle()
    assert matched(agent, name) == want


def test_arguments_are_typed_in_the_event(agent):
    ev = agent.wait_events(lambda e: "process_tracepoint" in e and
                           e["process_tracepoint"]["policy_name"] == "int-mask", 1)[0]["process_tracepoint"]
    assert ev["subsys"] == "syscalls" and ev["event"] == "sys_enter_openat"
    assert ev["args"][0] == {"string_arg": "/tmp/thsel/int-mask/creat"}
    assert ev["args"][1]["int_arg"] & O_CREAT
    assert ev["process"]["pid"] == os.getpid()


def test_match_pids_and_binaries_and_monitor_mode(agent):
    """matchPIDs In, matchBinaries In, and policy-mode monitor turning a Sigkill
    into an event that says what would have happened."""
    assert subprocess.run(["/bin/cat", BINS_TARGET], capture_output=True).returncode == 0
    r = subprocess.run([str(agent.cat), BINS_TARGET], capture_output=True)
    assert r.returncode == 0, "monitor mode must not kill"
    do_open(BINS_TARGET, 0)
    bins = policy_events(agent, "bins-monitor", 1)
    assert [e["process"]["binary"] for e in bins] == [str(agent.cat)]
    assert bins[0]["action"] == "KPROBE_ACTION_POST"          # nothing was enforced
    assert bins[0]["monitor"] is True                          # export.host_fields
    assert bins[0]["monitor_action"] == "KPROBE_ACTION_SIGKILL"
    assert [e["process"]["pid"] for e in policy_events(agent, "my-pid", 1)] == [os.getpid()]


def args_of(agent, name, count):
    out = []
    for body in policy_events(agent, name, count):
        a = body["args"][-1]
        out.append(a.get("file_arg", {}).get("path") or a.get("string_arg"))
    return out


def test_every_selector_hook_loads(agent):
    inactive = [line for line in agent.log_text().splitlines() if "not active" in line]
    if features().lsm:
        assert inactive == [], inactive
    else:   # BPF-LSM inactive: the lsmhooks policy cannot run, and says why
        assert len(inactive) == 1 and "policy nsch " in inactive[0], inactive
        assert "BPF-LSM is not usable" in inactive[0]
    assert "per-process state for policies: on" in agent.log_text()


def test_postfix_and_follow_children(agent):
    subprocess.run([SH, "-c", f"cat {BASE}/follow/f.key; true"], check=True, capture_output=True)
    subprocess.run(["cat", f"{BASE}/follow/f.key"], check=True, capture_output=True)   # not a child of SH
    subprocess.run([SH, "-c", f"cat {BASE}/pids/a; true"], check=True, capture_output=True)  # not the suffix
    paths = args_of(agent, "postfix-follow", 1)
    assert set(paths) == {f"{BASE}/follow/f.key"}
    # one process: the child of SH (the guest's overlayfs calls security_file_open
    # for the overlay file and again for the real one, so one open may give two events)
    procs = {(b["process"]["pid"], b["process"]["binary"]) for b in policy_events(agent, "postfix-follow")}
    assert len(procs) == 1 and next(iter(procs))[1].endswith("/cat"), procs


def test_namespace_pid_and_follow_forks(agent):
    """Two matchPIDs entries ANDed: pid 1 in its pid namespace, and not a
    descendant of the helper."""
    agent.helper.stdin.write(b"go\n")
    agent.helper.stdin.close()
    assert agent.helper.wait(timeout=60) == 0         # its pid-1 cat: excluded by NotIn followForks
    subprocess.run(["unshare", "--pid", "--fork", "cat", f"{BASE}/pids/a"], check=True, capture_output=True)
    subprocess.run(["cat", f"{BASE}/pids/a"], check=True, capture_output=True)    # pid != 1 in its namespace
    assert args_of(agent, "ns-pids", 1) == [f"{BASE}/pids/a"]


def test_namespace_capabilities(agent):
    if not function_hooks():
        not_applicable("fd_install needs kprobes or fentry")
    subprocess.run(["unshare", "--user", "--map-root-user", "cat", f"{BASE}/userns/a"], check=True,
                   capture_output=True)
    subprocess.run(["cat", f"{BASE}/userns/b"], check=True, capture_output=True)   # host root: host user ns
    assert args_of(agent, "caps-userns", 1) == [f"{BASE}/userns/a"]


def test_capability_and_namespace_changes_once_each(agent):
    f = features()
    if not (function_hooks() or f.lsm):
        not_applicable("the change selectors' hooks (fd_install, lsmhooks file_open) need kprobes/fentry or BPF-LSM")
    subprocess.run([sys.executable, "-c", CHANGES, BASE], check=True)
    subprocess.run(["cat", f"{BASE}/capch/after1", f"{BASE}/nsch/after1"], check=True, capture_output=True)
    if function_hooks():
        assert args_of(agent, "capch", 1) == [f"{BASE}/capch/after1"]
    if f.lsm:      # nsch is an lsmhooks policy
        assert args_of(agent, "nsch", 1) == [f"{BASE}/nsch/after1"]
