"""Value sets larger than Tetragon's documented per-entry limits, evaluated in
the kernel: a file Prefix matcher with 14 values (the documented limit was 8)
is one LPM-trie set of the hook, so the 14th prefix matches as the first does
and a path under none of them is not reported."""
from __future__ import annotations

import os
import shutil
import uuid

import pytest

from agent_harness import RunningAgent, policy_events, policy_text

pytestmark = pytest.mark.kernel


def touch_and_open(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x\n")
    os.close(os.open(path, os.O_RDONLY))


def test_fourteen_file_prefixes(tmp_path):
    tag = uuid.uuid4().hex[:8]
    base = f"/tmp/th-many-{tag}"
    prefixes = [f"{base}/p{i:02d}/" for i in range(14)]
    name = f"many-prefixes-{tag}"
    values = "\n".join(f"        - {p}" for p in prefixes)
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text(name, f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values:
{values}
"""))
    agent = RunningAgent(tmp_path, "--policy", str(policy))
    try:
        log = agent.log_text()
        assert "not active" not in log.lower() and "rejected" not in log.lower(), log
        last = f"{prefixes[13]}last.txt"
        nowhere = f"{base}/p99/nowhere.txt"          # under no prefix
        marker = f"{prefixes[0]}marker.txt"          # opened after it: its event comes later
        touch_and_open(last)
        touch_and_open(nowhere)
        touch_and_open(marker)
        agent.wait_events(lambda e: any(
            b.get("policy_name") == name and b["args"][0]["file_arg"]["path"] == marker
            for b in [e.get("process_kprobe", {})] if b), 1)
        bodies = [b for b in policy_events(agent, name) if b["process"]["pid"] == os.getpid()]
    finally:
        agent.stop()
        shutil.rmtree(base, ignore_errors=True)
    paths = {b["args"][0]["file_arg"]["path"] for b in bodies}
    assert last in paths, paths
    assert marker in paths, paths
    assert nowhere not in paths, paths
    assert paths <= {last, marker}, paths
