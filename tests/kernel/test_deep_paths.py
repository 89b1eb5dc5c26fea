"""Paths at any depth: a Prefix policy cannot be dodged from a deep directory.

An unprivileged user can nest directories far deeper than PATH_MAX (mkdir +
chdir, one level at a time) and execute a binary from there.  The kernel-side
path walk must still compare the ROOT end of such a path with a Prefix value,
and where it cannot reach the root at all (deeper than TH_PATH_DEPTH
components) an enforcing selector fails closed.  Exported paths keep their
root end, flagged as cut.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from agent_harness import SLOWDOWN, execs_of, policy_events, start_with_policies
from tetrahost.bpf.native import lib

pytestmark = pytest.mark.kernel

TAG = uuid.uuid4().hex[:8]
GUARDED = f"/tmp/thdeep-{TAG}"      # everything executed below it is killed
FREE = f"/tmp/thdeep-free-{TAG}"    # the same binaries, no policy: they must run
DEPTHS = (10, 60, 61, 64, 65, 200, 1000, 2047, 4096)

POLICY = f"""
  kprobes:
  - call: security_bprm_check
    syscall: false
    args:
    - index: 0
      type: linux_binprm
    selectors:
    - matchBinaries:
      - operator: Prefix
        values: ["{GUARDED}/"]
      matchActions:
      - action: Sigkill
"""


class DeepTree:
    """A chain of directories `d` under top, `depth` levels deep, with a copy
    of /usr/bin/true named `m` at the bottom.  Built and removed one level at
    a time (absolute paths this long are refused by every path syscall)."""

    def __init__(self, top: str, depth: int):
        self.top, self.depth = top, depth
        os.makedirs(top, exist_ok=True)
        home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(top)
            for _ in range(depth):
                os.mkdir("d")
                os.chdir("d")
            shutil.copy("/usr/bin/true", "m")
        finally:
            os.fchdir(home)
            os.close(home)

    def run(self) -> int:
        """Execute ./m from the bottom directory; its exit status."""
        home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(self.top)
            for _ in range(self.depth):
                os.chdir("d")
            return subprocess.run(["./m"]).returncode
        finally:
            os.fchdir(home)
            os.close(home)

    def remove(self) -> None:
        home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(self.top)
            for _ in range(self.depth):
                os.chdir("d")
            os.unlink("m")
            for _ in range(self.depth):
                os.chdir("..")
                os.rmdir("d")
        finally:
            os.fchdir(home)
            os.close(home)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = start_with_policies(tmp_path_factory, {f"deep-{TAG}": POLICY})
    assert "not active" not in a.log_text().lower(), a.log_text()
    yield a
    a.stop()
    shutil.rmtree(GUARDED, ignore_errors=True)
    shutil.rmtree(FREE, ignore_errors=True)


@pytest.mark.parametrize("depth", DEPTHS)
def test_prefix_kills_at_any_depth(agent, depth):
    guarded, free = DeepTree(f"{GUARDED}/{depth}", depth), DeepTree(f"{FREE}/{depth}", depth)
    try:
        assert guarded.run() == -9, f"exec at depth {depth} under {GUARDED}/ was not killed"
        assert free.run() == 0, f"exec at depth {depth} outside the policy's prefix was killed"
    finally:
        guarded.remove()
        free.remove()


def test_exported_path_keeps_its_root_end(agent):
    """A binary path longer than TH_PATH_MAX is exported from the root,
    cut at the leaf end and flagged, never silently front-truncated."""
    depth = 4096                           # "/d" x 4096 = 8 KiB of path
    tree = DeepTree(f"{FREE}/export", depth)
    try:
        assert tree.run() == 0
        events = agent.wait_events(
            lambda e: "process_exec" in e and e["process_exec"]["process"]["binary"].startswith(f"{FREE}/export/d/"), 1)
    finally:
        tree.remove()
    process = events[0]["process_exec"]["process"]
    assert "truncFilename" in process["flags"].split()
    assert len(process["binary"].encode()) <= lib.TH_PATH_MAX
    assert process["binary"].startswith(f"{FREE}/export" + "/d" * 100)


def test_deeper_than_the_walk_fails_closed(agent):
    """Past TH_PATH_DEPTH components the kernel cannot see the root end: the
    enforcing Prefix selector matches (the exec is killed) and says why,
    even for a binary outside the prefix."""
    depth = lib.TH_PATH_DEPTH + 16
    tree = DeepTree(f"{FREE}/unresolved", depth)
    try:
        assert tree.run() == -9, "an exec whose path cannot be resolved was let through"
    finally:
        tree.remove()
    bodies = policy_events(agent, f"deep-{TAG}", 1)
    assert any(b.get("path_unresolved") for b in bodies), bodies     # export.host_fields (with_host)


def test_short_paths_unchanged(agent):
    """Control: a plain exec under the prefix is killed, one outside runs and
    its exec event has the full path without a truncation flag."""
    for top in (GUARDED, FREE):
        os.makedirs(top, exist_ok=True)
        shutil.copy("/usr/bin/true", f"{top}/m")
    assert subprocess.run([f"{GUARDED}/m"]).returncode == -9
    assert subprocess.run([f"{FREE}/m"]).returncode == 0
    ev = agent.wait_events(execs_of(f"{FREE}/m"), 1, timeout=10 * SLOWDOWN)[0]
    assert "truncFilename" not in ev["process_exec"]["process"]["flags"]
