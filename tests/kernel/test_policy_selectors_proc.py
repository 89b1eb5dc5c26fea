"""Process selectors evaluated in the kernel, on this machine: matchPIDs
followForks / isNamespacePID / several entries, matchBinaries followChildren
and Postfix, matchArgs Postfix, matchCapabilities isNamespaceCapability,
matchCapabilityChanges, matchNamespaceChanges.

One agent, one policy per case, all on the syscalls/sys_enter_openat
tracepoint (the hook kind this kernel has).  Each case opens paths under its
own directory from processes built for it; the events say which opens each
selector matched, and each case lists what must match AND what must not.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from agent_harness import RunningAgent

pytestmark = pytest.mark.kernel

BASE = "/tmp/thselp"

# Python snippets run in a child: drop a capability from the effective set,
# or unshare a namespace, between two opens (ctypes: no extra packages).
_PY_PRELUDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def drop_effective(cap):
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)      # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()                    # 2 x {effective, permitted, inheritable}
    assert libc.capget(hdr, data) == 0
    data[(cap // 32) * 3] &= ~(1 << (cap % 32))
    assert libc.capset(hdr, data) == 0, ctypes.get_errno()
def unshare(flags):
    assert libc.unshare(flags) == 0, ctypes.get_errno()
def touch(name):
    os.close(os.open(name, os.O_RDONLY | os.O_CREAT, 0o600))
"""
CAP_NET_RAW, CAP_SYS_ADMIN = 13, 21
CLONE_NEWUTS = 0x04000000


def policy(name: str, selector: str) -> str:
    return f"""apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    - index: 7
      type: int
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["{BASE}/{name}/"]
{selector}"""


def do_open(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    os.close(fd)


def run_py(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", _PY_PRELUDE + code, *args], check=True)


class World:
    """Processes that must exist before the policies are written (their pids
    are in the policies) or before the agent starts (seeding from /proc)."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="thselp-"))
        shutil.rmtree(BASE, ignore_errors=True)
        self.sh = self.dir / "thselp-sh"           # matchBinaries followChildren
        shutil.copy2("/bin/dash" if os.path.exists("/bin/dash") else "/bin/sh", self.sh)
        self.pfcat = self.dir / "x-thselp-cat"       # matchBinaries Postfix
        shutil.copy2("/bin/cat", self.pfcat)
        # A: opens a file itself, in a child, in a grandchild; waits for "go"
        d = f"{BASE}/%s"
        self.a = subprocess.Popen(
            ["/bin/sh", "-c", 'read go; for p in "$@"; do : < "$p/self"; cat "$p/child"; '
             'sh -c "cat \\"$p/grandchild\\""; done', "sh",
             *[d % n for n in ("pid-follow", "pid-plain", "pid-and", "pid-notin-follow")]],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a followed binary running since before the agent: its later children must match
        self.pre = subprocess.Popen(
            [str(self.sh), "-c", f'read go; cat {BASE}/bin-follow/pre-child; true'],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def release(self, proc) -> None:
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0

    def close(self):
        for p in (self.a, self.pre):
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(BASE, ignore_errors=True)


def cases(w: World) -> dict[str, tuple[str, set[str]]]:
    a = w.a.pid
    return {
        "pid-follow": (f"""      matchPIDs:
      - operator: In
        followForks: true
        values: [{a}]
""", {"self", "child", "grandchild"}),
        "pid-plain": (f"""      matchPIDs:
      - operator: In
        values: [{a}]
""", {"self"}),
        # several entries are ANDed: A's descendants, not A
        "pid-and": (f"""      matchPIDs:
      - operator: In
        followForks: true
        values: [{a}]
      - operator: NotIn
        values: [{a}]
""", {"child", "grandchild"}),
        "pid-notin-follow": (f"""      matchPIDs:
      - operator: NotIn
        followForks: true
        values: [{a}]
""", {"other"}),
        # pid 1 of a new pid namespace; its child (pid 2 there) is not followed
        "pid-ns": ("""      matchPIDs:
      - operator: In
        isNamespacePID: true
        values: [1]
""", {"nsinit"}),
        "bin-follow": (f"""      matchBinaries:
      - operator: In
        followChildren: true
        values: ["{w.sh}"]
""", {"pre-child", "child", "grandchild"}),
        "bin-postfix": ("""      matchBinaries:
      - operator: Postfix
        values: ["-thselp-cat"]
""", {"postfix"}),
        "arg-postfix": ("""      - index: 0
        operator: Postfix
        values: [".key", "/id_rsa"]
""", {"a.key", "id_rsa"}),
        "arg-notpostfix": ("""      - index: 0
        operator: NotPostfix
        values: [".tmp"]
""", {"keep.txt"}),
        "caps-userns": ("""      matchCapabilities:
      - type: Effective
        operator: In
        isNamespaceCapability: true
        values: ["CAP_SYS_ADMIN"]
""", {"in-userns"}),
        "capch-in": ("""      matchCapabilityChanges:
      - type: Effective
        operator: In
        values: ["CAP_SYS_ADMIN"]
""", {"after1"}),
        "capch-notin": ("""      matchCapabilityChanges:
      - type: Effective
        operator: NotIn
        values: ["CAP_SYS_ADMIN"]
""", {"after1"}),
        "nsch": ("""      matchNamespaceChanges:
      - operator: In
        values: ["Uts"]
""", {"after1"}),
    }


def workload(w: World) -> None:
    b = BASE
    w.release(w.a)
    do_open(f"{b}/pid-notin-follow/other")
    for name in ("pid-follow", "pid-plain", "pid-and"):
        do_open(f"{b}/{name}/other")
    subprocess.run(["unshare", "--pid", "--fork", "cat", f"{b}/pid-ns/nsinit"], check=True)
    subprocess.run(["unshare", "--pid", "--fork", "sh", "-c", f"cat {b}/pid-ns/nschild; true"], check=True)
    do_open(f"{b}/pid-ns/host")

    w.release(w.pre)
    subprocess.run([str(w.sh), "-c", f'cat {b}/bin-follow/child; sh -c "cat {b}/bin-follow/grandchild; true"; true'],
                   check=True)
    subprocess.run(["/bin/sh", "-c", f"cat {b}/bin-follow/plain"], check=True)
    subprocess.run([str(w.pfcat), f"{b}/bin-postfix/postfix"], check=True)
    subprocess.run(["/bin/cat", f"{b}/bin-postfix/plain"], check=True)

    for n in ("a.key", "a.key.bak", "id_rsa", "xid_rsa"):
        do_open(f"{b}/arg-postfix/{n}")
    for n in ("keep.txt", "drop.tmp"):
        do_open(f"{b}/arg-notpostfix/{n}")

    subprocess.run(["unshare", "--user", "--map-root-user", "cat", f"{b}/caps-userns/in-userns"], check=True)
    do_open(f"{b}/caps-userns/host")          # root here has CAP_SYS_ADMIN, in the host user namespace

    # a change is reported once: the match moves the baseline
    run_py(f"touch(sys.argv[1] + '/before'); drop_effective({CAP_SYS_ADMIN}); "
           "touch(sys.argv[1] + '/after1'); touch(sys.argv[1] + '/after2')", f"{b}/capch-in")
    run_py(f"touch(sys.argv[1] + '/before'); drop_effective({CAP_NET_RAW}); "
           "touch(sys.argv[1] + '/after1'); touch(sys.argv[1] + '/after2')", f"{b}/capch-notin")
    run_py(f"touch(sys.argv[1] + '/before'); unshare({CLONE_NEWUTS}); "
           "touch(sys.argv[1] + '/after1'); touch(sys.argv[1] + '/after2')", f"{b}/nsch")
    # unchanged processes never match the change selectors
    for name in ("capch-in", "capch-notin", "nsch"):
        subprocess.run(["/bin/cat", f"{b}/{name}/unchanged"], check=True)


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.close()


@pytest.fixture(scope="module")
def agent(world, tmp_path_factory):
    args = []
    pdir = tmp_path_factory.mktemp("policies")
    for name, (selector, _) in cases(world).items():
        os.makedirs(f"{BASE}/{name}", exist_ok=True)
        for f in ("self", "child", "grandchild", "pre-child", "plain", "postfix", "nschild", "nsinit",
                  "in-userns", "unchanged"):
            pathlib.Path(f"{BASE}/{name}/{f}").touch()
        path = pdir / f"{name}.yaml"
        path.write_text(policy(name, selector))
        args += ["--policy", str(path)]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    assert "not active" not in a.log_text(), a.log_text()
    workload(world)
    yield a
    a.stop()


def matched(agent, name: str) -> set[str]:
    out = set()
    for e in agent.events():
        t = e.get("process_tracepoint")
        if t and t["policy_name"] == name:
            out.add(t["args"][0]["string_arg"].rsplit("/", 1)[1])
    return out


CASE_NAMES = [
    "pid-follow", "pid-plain", "pid-and", "pid-notin-follow", "pid-ns", "bin-follow", "bin-postfix",
    "arg-postfix", "arg-notpostfix", "caps-userns", "capch-in", "capch-notin", "nsch"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_process_selector_matches_exactly(agent, world, name):
    want = cases(world)[name][1]
    agent.wait_events(lambda e: "process_tracepoint" in e and
                      e["process_tracepoint"]["policy_name"] == name, len(want))
    # the last workload step's opens are in too: nothing more can come for this case
    agent.wait_events(lambda e: "process_tracepoint" in e and
                      e["process_tracepoint"]["policy_name"] == "nsch", 1)
    assert matched(agent, name) == want


def test_per_process_state_is_seeded_from_proc(agent):
    """The agent turned per-process tracking on for these policies, seeding
    the processes that were already running (the bin-follow case's pre-child
    depends on it)."""
    assert "per-process state for policies: on" in agent.log_text()
