"""What `tracingpolicy list` reports per policy, from the control server's own counts."""
from __future__ import annotations

from types import SimpleNamespace

from tetrahost.control.server import ControlServer
from tetrahost.control.status import policy_list
from tetrahost.events.meta import EventMeta


def hook_event(policy, action, enforced):
    return "{}", EventMeta(kind="process_kprobe", pid=1, binary="/tmp/x", exec_id="e", ktime=0,
                           policy=policy, action=action, enforced=enforced)


def test_enforcements_count_only_enforced_events_of_each_policy(tmp_path):
    server = ControlServer(str(tmp_path / "tetra.sock"))        # never started: no socket
    exec_event = ("{}", EventMeta(kind="process_exec", pid=2, binary="/bin/sh", exec_id="f", ktime=0))
    server.write_events([hook_event("kill", "SIGKILL", True), hook_event("kill", "SIGKILL", True),
                         hook_event("watch", "POST", False), exec_event])
    server.write_events([hook_event("kill", "OVERRIDE", True)])
    views = [SimpleNamespace(name=n, file=f"/p/{n}.yaml", state="enforcing", mode="enforce", generation=1,
                             loaded_at=0.0, events=0, hooks=()) for n in ("kill", "watch", "idle")]
    listed = policy_list(SimpleNamespace(policies=views, sections={}), server.enforcements)
    assert {p["name"]: p["enforcements"] for p in listed} == {"kill": 3, "watch": 0, "idle": 0}
