"""policies.d applied live with kprobe / BPF-LSM hooks, on Debian's 6.1 kernel.

One agent watches a directory; a file-open policy (kprobe security_file_open,
Override: BPF-LSM file_open) is added, replaced by a version that protects
another path, broken (the previous version keeps enforcing), and deleted.
"""
from __future__ import annotations

import os
import pathlib
import time

import pytest

from agent_harness import SLOWDOWN, RunningAgent

BASE = pathlib.Path("/tmp/thvm-live")
POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: live-deny
spec:
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{path}"]
      matchActions:
      - action: Override
        argError: -1
"""


def denied(path: pathlib.Path) -> bool:
    try:
        path.open().close()
        return False
    except PermissionError:
        return True


def eventually(cond, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout * SLOWDOWN
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    BASE.mkdir(exist_ok=True)
    for name in ("a", "b"):
        (BASE / name).write_text("x")
    pdir = tmp_path_factory.mktemp("policies.d")
    agent = RunningAgent(tmp_path_factory.mktemp("agent"), "--policy-dir", str(pdir))
    yield agent, pdir
    agent.stop()


def test_add_replace_broken_delete(live):
    agent, pdir = live
    a, b = BASE / "a", BASE / "b"
    assert not denied(a) and not denied(b)

    # add: the new file is enforcing within seconds
    (pdir / "deny.yaml").write_text(POLICY.format(path=a))
    eventually(lambda: denied(a), "the added policy denies a")
    assert not denied(b)

    # replace, as editors save: write a temp file, rename over the original
    tmp = pdir / ".deny.yaml.swp"
    tmp.write_text(POLICY.format(path=b))
    os.rename(tmp, pdir / "deny.yaml")
    eventually(lambda: denied(b) and not denied(a), "the replacement denies b and no longer a")

    # a broken version is rejected and the running one keeps enforcing
    (pdir / "deny.yaml").write_text(POLICY.format(path=b).replace("operator: Equal", "operator: Equl"))
    eventually(lambda: "Equl" in agent.log_text(), "the agent reports the broken file")
    assert denied(b) and not denied(a)

    # delete: nothing is denied any more
    (pdir / "deny.yaml").unlink()
    eventually(lambda: not denied(b), "the deleted policy stops enforcing")
    assert "BPF-LSM file_open" in agent.log_text()
