"""`resolve:` on the kernel the tests run on: raw tracepoint
sched/sched_process_exec (its TP_PROTO arguments: the task, the old pid,
the linux_binprm), each argument followed through struct members whose
offsets come from this kernel's BTF:

- the parent's comm (`real_parent.comm`, a char array) matched with Equal
  in the kernel: an exec under a parent of another name gives no event;
- the executed file (`file`, a struct file * of the linux_binprm) read as a
  file argument, i.e. resolved to its path by the existing reader;
- the parent's tgid (`real_parent.tgid`, an int) and the name the exec was
  asked for (`filename`, a char pointer), the latter matched with Equal.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from agent_harness import policy_events, require_root_and_bpf, start_with_policies
from kernel_expect import features, not_applicable

pytestmark = pytest.mark.kernel

ID = uuid.uuid4().hex[:6]
COMM = f"thres-{ID}"            # 12 characters: fits comm (15)
OTHER_COMM = f"thoth-{ID}"
BY_COMM = f"resolve-comm-{ID}"
BY_NAME = f"resolve-name-{ID}"

# The parent: renames itself (prctl PR_SET_NAME), prints its pid, then runs
# the binary as its child; the child's exec is the event.
PARENT = r"""
import ctypes, subprocess, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
print(__import__("os").getpid(), flush=True)
subprocess.run([sys.argv[2]], check=True)
"""


def comm_policy() -> str:
    return f"""
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - index: 0
      type: string
      resolve: real_parent.comm
    - index: 2
      type: file
      resolve: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{COMM}"]
"""


def name_policy(binary: str) -> str:
    return f"""
  tracepoints:
  - subsystem: sched
    event: sched_process_exec
    raw: true
    args:
    - index: 0
      type: int
      resolve: real_parent.tgid
    - index: 2
      type: string
      resolve: filename
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{binary}"]
"""


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("resolve") / f"th-resolve-{ID}"
    shutil.copy("/bin/true", path)
    return os.path.realpath(path)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, binary):
    require_root_and_bpf()
    if not features().raw_tracepoint:
        not_applicable("no raw tracepoints")
    a = start_with_policies(tmp_path_factory, {BY_COMM: comm_policy(), BY_NAME: name_policy(binary)})
    yield a
    assert a.stop() == 0


def run_under(comm: str, binary: str) -> int:
    """Run binary as the child of a process named comm; the parent's pid."""
    out = subprocess.run([sys.executable, "-c", PARENT, comm, binary], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def test_policy_reports_how_each_path_resolved(agent):
    log = agent.log_text()
    assert "raw_tp sched_process_exec" in log, log[-2000:]


def test_parent_comm_matched_in_kernel_and_file_resolved(agent, binary):
    run_under(OTHER_COMM, binary)        # Equal does not match: no event
    run_under(COMM, binary)
    events = policy_events(agent, BY_COMM, count=1)
    assert len(events) == 1, events
    args = events[0]["args"]
    assert args[0] == {"string_arg": COMM}
    assert args[1]["file_arg"]["path"] == binary
    assert events[0]["process"]["binary"] == binary


def test_no_event_when_the_parent_has_another_name(agent, binary):
    before = policy_events(agent, BY_COMM)
    run_under(OTHER_COMM, binary)
    assert policy_events(agent, BY_COMM) == before


def test_int_member_and_char_pointer(agent, binary):
    parent = run_under(OTHER_COMM, binary)
    events = [e for e in policy_events(agent, BY_NAME, count=1) if e["args"][0] == {"int_arg": parent}]
    assert len(events) == 1, policy_events(agent, BY_NAME)
    assert events[0]["args"][1] == {"string_arg": binary}


# ---- BPF-LSM (Tetragon's lsm_track_grandparent shape), where it is usable ----

BY_LSM = f"resolve-lsm-{ID}"


def lsm_policy() -> str:
    return f"""
  lsmhooks:
  - hook: bprm_check_security
    args:
    - index: 0
      type: string
      resolve: mm.owner.real_parent.comm
    selectors:
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["{COMM}"]
"""


@pytest.fixture(scope="module")
def lsm_agent(tmp_path_factory):
    require_root_and_bpf()
    if not features().lsm:
        not_applicable("BPF-LSM is not usable")
    a = start_with_policies(tmp_path_factory, {BY_LSM: lsm_policy()})
    yield a
    assert a.stop() == 0


def test_lsm_hook_resolves_through_the_new_mm(lsm_agent, binary):
    """At bprm_check_security the new mm's owner is the task executing: its
    parent is the renamed process."""
    run_under(OTHER_COMM, binary)
    run_under(COMM, binary)
    events = policy_events(lsm_agent, BY_LSM, count=1)
    assert [e["args"] for e in events] == [[{"string_arg": COMM}]], events
    assert "BPF-LSM bprm_check_security" in lsm_agent.log_text()
