"""Syscall-fallback hooks share one dispatcher program on raw_syscalls.

With kprobes and fentry avoided (TETRAHOST_AVOID_FEATURES: what a kernel
without them offers, which this test can ask of any kernel), syscall hooks go
through the sys_enter fallback.  However many there are, one program is
attached to sys_enter: it tail-calls the hooks of the syscall being made, in
a chain.  Checked: two policies on the same syscall both fire for one call
(the chain goes on after the first), a third on another value does not, a
policy removed from the middle of a chain leaves the others working, and
with no syscall hook left nothing of ours stays on sys_enter.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

from agent_harness import RunningAgent, policy_events, policy_text
from tetrahost.sensors.probe import AVOID_ENV

pytestmark = pytest.mark.kernel
REPO = pathlib.Path(__file__).resolve().parents[2]
TAG = uuid.uuid4().hex[:6]
AVOID = "kprobe,kretprobe,kprobe_multi,fentry,fexit,fmod_ret,lsm"


def dup3_policy(newfd: int) -> str:
    """Post every dup3(2) whose new descriptor is newfd."""
    return f"""
  kprobes:
  - call: sys_dup3
    syscall: true
    args:
    - index: 1
      type: int
    selectors:
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["{newfd}"]
"""


def link_ids_of(pid: int) -> set[int]:
    """Ids of the BPF links process pid holds (its fds' fdinfo)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = pathlib.Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue            # closed meanwhile
        ids |= {int(line.split()[1]) for line in text.splitlines() if line.startswith("link_id:")}
    return ids


def sys_enter_links(pid: int) -> list[dict]:
    """Raw tracepoint links of process pid on sys_enter (bpftool names each link's tracepoint)."""
    mine = link_ids_of(pid)
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [link for link in json.loads(out or "[]")
            if link.get("id") in mine and link.get("tp_name") == "sys_enter"]


def dup3_to(newfd: int) -> None:
    """dup3(0, newfd, O_CLOEXEC): os.dup2 with inheritable=False is dup3."""
    os.dup2(0, newfd, inheritable=False)
    os.close(newfd)


@pytest.fixture
def agent(tmp_path):
    names = {"first": f"dsp-a-{TAG}", "second": f"dsp-b-{TAG}", "other": f"dsp-c-{TAG}"}
    policies = tmp_path / "policies.d"
    policies.mkdir()
    for key, newfd in (("first", 901), ("second", 901), ("other", 902)):
        (policies / f"{names[key]}.yaml").write_text(policy_text(names[key], dup3_policy(newfd)))
    sock = tmp_path / "control.sock"
    a = RunningAgent(tmp_path, "--policy-dir", str(policies), "--socket", str(sock), env={AVOID_ENV: AVOID})
    a.names, a.sock = names, sock
    assert "not active" not in a.log_text().lower(), a.log_text()
    yield a
    a.stop()


def tetra(agent, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tetrahost.cli.tetra", *args, "--socket", str(agent.sock)],
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_one_program_runs_every_hook_of_a_syscall(agent):
    n = agent.names
    assert "raw_tp sys_enter" in json.dumps(tetra(agent, "tracingpolicy", "list", "-o", "json").stdout)
    assert len(sys_enter_links(agent.proc.pid)) == 1, "each hook attached its own sys_enter program"

    dup3_to(901)
    assert len(policy_events(agent, n["first"], 1)) == 1
    assert len(policy_events(agent, n["second"], 1)) == 1     # the chain went on after the first hook
    assert policy_events(agent, n["other"]) == []

    dup3_to(902)
    assert len(policy_events(agent, n["other"], 1)) == 1
    assert len(policy_events(agent, n["first"])) == 1         # still one: 902 is not its value


def test_removing_a_hook_keeps_the_rest_of_its_chain(agent):
    n = agent.names
    tetra(agent, "tracingpolicy", "delete", n["first"])
    dup3_to(901)
    assert len(policy_events(agent, n["second"], 1)) == 1
    assert policy_events(agent, n["first"]) == []

    for key in ("second", "other"):
        tetra(agent, "tracingpolicy", "delete", n[key])
    assert sys_enter_links(agent.proc.pid) == [], "the dispatcher stayed on sys_enter with no hook left"
