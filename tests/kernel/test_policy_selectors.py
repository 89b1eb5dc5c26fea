"""Selector operators and actions, evaluated in the kernel, on this machine.

One agent loads one policy per case, all on the syscalls/sys_enter_openat
tracepoint (available here, unlike kprobes).  Each case opens its own paths
under a per-case prefix; the events say which opens each selector matched.
Each case lists what must match AND what must not, so it can fail both ways.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from agent_harness import RunningAgent

pytestmark = pytest.mark.kernel

O_WRONLY, O_CREAT = os.O_WRONLY, os.O_CREAT
# os.open() adds O_CLOEXEC (PEP 446): the kernel sees flags | 0x80000
CLOEXEC = os.O_CLOEXEC
BASE = "/tmp/thsel"


def policy(name: str, selectors: str, extra_args: str = "", options: str = "") -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
{options}  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    - index: 7
      type: int
{extra_args}    selectors:
{selectors}
"""


# name -> (selectors yaml, [(path suffix, flags)], suffixes that must match)
CASES = {
    "str-equal": ("""    - matchArgs:
      - index: 0
        operator: Equal
        values: ["/tmp/thsel/str-equal/a"]
""", [("a", 0), ("ab", 0), ("b", 0)], {"a"}),
    "str-prefix": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/str-prefix/keep"]
""", [("keep-1", 0), ("keep", 0), ("drop", 0)], {"keep-1", "keep"}),
    "str-notprefix": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/str-notprefix/"]
      - index: 0
        operator: NotPrefix
        values: ["/tmp/thsel/str-notprefix/skip"]
""", [("skip-1", 0), ("other", 0)], {"other"}),
    "str-notequal": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/str-notequal/"]
      - index: 0
        operator: NotEqual
        values: ["/tmp/thsel/str-notequal/x"]
""", [("x", 0), ("y", 0)], {"y"}),
    "int-mask": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/int-mask/"]
      - index: 1
        operator: Mask
        values: ["64"]
""", [("creat", O_WRONLY | O_CREAT), ("read", 0)], {"creat"}),
    "int-gt-lt": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/int-gt-lt/"]
      - index: 1
        operator: GreaterThan
        values: ["524288"]
      - index: 1
        operator: LessThan
        values: ["524290"]
""", [("wronly", O_WRONLY), ("rdonly", 0), ("creat", O_WRONLY | O_CREAT)], {"wronly"}),
    "int-equal": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/int-equal/"]
      - index: 1
        operator: Equal
        values: ["524288", "524289"]
""", [("r", 0), ("w", O_WRONLY), ("c", O_WRONLY | O_CREAT)], {"r", "w"}),
    "nopost": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/nopost/"]
      matchActions:
      - action: NoPost
""", [("a", 0)], set()),
    "rate-limited": ("""    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thsel/rate-limited/"]
      matchActions:
      - action: Post
        rateLimit: "1m"
        rateLimitScope: process
""", [("a", 0), ("b", 0), ("c", 0)], {"a"}),
    "second-selector": ("""    - matchArgs:
      - index: 0
        operator: Equal
        values: ["/tmp/thsel/second-selector/one"]
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["/tmp/thsel/second-selector/two"]
""", [("one", 0), ("two", 0), ("three", 0)], {"one", "two"}),
}


def do_open(path: str, flags: int) -> None:
    try:
        fd = os.open(path, flags, 0o600)
        os.close(fd)
    except OSError:
        pass


@pytest.fixture(scope="module")
def world():
    d = pathlib.Path(tempfile.mkdtemp(prefix="thsel-policies-"))
    shutil.rmtree(BASE, ignore_errors=True)
    for name in CASES:
        os.makedirs(f"{BASE}/{name}", exist_ok=True)
    yield d
    shutil.rmtree(d)
    shutil.rmtree(BASE, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(world, tmp_path_factory):
    args = []
    for name, (selectors, _, _) in CASES.items():
        path = world / f"{name}.yaml"
        path.write_text(policy(name, selectors))
        args += ["--policy", str(path)]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    assert "not active" not in a.log_text()
    for name, (_, opens, _) in CASES.items():
        for suffix, flags in opens:
            do_open(f"{BASE}/{name}/{suffix}", flags)
    yield a
    a.stop()


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
    else:   # NoPost: give the pipeline the time the other cases needed
        agent.wait_events(lambda e: "process_tracepoint" in e, 3)
    assert matched(agent, name) == want


def test_arguments_are_typed_in_the_event(agent):
    ev = agent.wait_events(lambda e: "process_tracepoint" in e and
                           e["process_tracepoint"]["policy_name"] == "int-mask", 1)[0]["process_tracepoint"]
    assert ev["subsys"] == "syscalls" and ev["event"] == "sys_enter_openat"
    assert ev["args"][0] == {"string_arg": "/tmp/thsel/int-mask/creat"}
    assert ev["args"][1]["int_arg"] & O_CREAT
    assert ev["process"]["pid"] == os.getpid()


def test_match_pids_and_binaries_and_monitor_mode(tmp_path, world):
    """matchPIDs In, matchBinaries In, and policy-mode monitor turning a Sigkill
    into an event that says what would have happened."""
    cat = world / "thsel-cat"
    shutil.copy2("/bin/cat", cat)
    target = f"{BASE}/bins/file"
    os.makedirs(f"{BASE}/bins", exist_ok=True)
    pathlib.Path(target).write_text("x")
    bins = tmp_path / "bins.yaml"
    bins.write_text(policy("bins", f"""    - matchBinaries:
      - operator: In
        values: ["{cat}"]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{target}"]
      matchActions:
      - action: Sigkill
""", options="  options:\n  - name: policy-mode\n    value: monitor\n"))
    pids = tmp_path / "pids.yaml"
    pids.write_text(policy("pids", f"""    - matchPIDs:
      - operator: In
        values: [{os.getpid()}]
      matchArgs:
      - index: 0
        operator: Equal
        values: ["{target}"]
"""))
    agent = RunningAgent(tmp_path, "--policy", str(bins), "--policy", str(pids))
    try:
        assert subprocess.run(["/bin/cat", target], capture_output=True).returncode == 0
        r = subprocess.run([str(cat), target], capture_output=True)
        assert r.returncode == 0, "monitor mode must not kill"
        do_open(target, 0)
        agent.wait_events(lambda e: "process_tracepoint" in e, 2)
    finally:
        agent.stop()
    evs = [{**e["process_tracepoint"], "host": e["tetrahost"]} for e in agent.events() if "process_tracepoint" in e]
    by_policy = {}
    for ev in evs:
        by_policy.setdefault(ev["policy_name"], []).append(ev)
    assert [e["process"]["binary"] for e in by_policy["bins"]] == [str(cat)]
    assert by_policy["bins"][0]["action"] == "KPROBE_ACTION_POST"          # nothing was enforced
    assert by_policy["bins"][0]["host"]["monitor"] is True                  # export.host_fields
    assert by_policy["bins"][0]["host"]["monitor_action"] == "KPROBE_ACTION_SIGKILL"
    assert [e["process"]["pid"] for e in by_policy["pids"]] == [os.getpid()]
