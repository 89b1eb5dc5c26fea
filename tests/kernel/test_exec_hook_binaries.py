"""matchBinaries In and NotIn at an exec hook, on whatever this kernel attaches
it with (BPF-LSM, fmod_ret, kprobe, or the sched_process_exec fallback).

At an exec hook the calling and the executed binary both count.  Through the
fallback the exec is done: the caller's binary IS the executed one, and the
program compares that one path instead of resolving it twice (run_hook,
csrc/bpf/generic.bpf.c): In must still see the executed binary and NotIn
must still refuse it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from agent_harness import bodies_of, policy_events, start_with_policies

pytestmark = pytest.mark.kernel

TAG = uuid.uuid4().hex[:8]
DIR = f"/tmp/thexecbin-{TAG}"
LISTED, OTHER = f"{DIR}/listed", f"{DIR}/other"


def policy(operator: str) -> str:
    return f"""
  kprobes:
  - call: security_bprm_check
    syscall: false
    args:
    - index: 0
      type: linux_binprm
    selectors:
    - matchBinaries:
      - operator: {operator}
        values: ["{LISTED}"]
      matchActions:
      - action: Post
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = start_with_policies(tmp_path_factory, {f"in-{TAG}": policy("In"), f"notin-{TAG}": policy("NotIn")})
    assert "not active" not in a.log_text().lower(), a.log_text()
    yield a
    a.stop()
    shutil.rmtree(DIR, ignore_errors=True)


def executed(body: dict) -> str:
    return body["args"][0]["linux_binprm_arg"]["path"]


def test_in_and_not_in_decide_on_the_executed_binary(agent):
    os.makedirs(DIR, exist_ok=True)
    for path in (LISTED, OTHER):
        shutil.copy("/usr/bin/true", path)
    assert subprocess.run([LISTED]).returncode == 0
    assert subprocess.run([OTHER]).returncode == 0
    # waited for: the last exec's NotIn event; everything before it is in by then
    agent.wait_events(lambda e: any(executed(b) == OTHER for b in bodies_of(e, f"notin-{TAG}")), 1)
    listed_in = [executed(b) for b in policy_events(agent, f"in-{TAG}") if executed(b).startswith(DIR)]
    not_in = [executed(b) for b in policy_events(agent, f"notin-{TAG}") if executed(b).startswith(DIR)]
    assert listed_in == [LISTED], listed_in
    assert not_in == [OTHER], not_in

