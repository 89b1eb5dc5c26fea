"""Postfix on strings and paths longer than an argument slot (252 bytes).

The slot keeps a long string's start; Postfix must still see its end, or a
policy keyed on a file name is evaded by a deep directory.  On this kernel:
a string argument (syscalls/sys_enter_openat) and a path argument (the
exec fallback's linux_binprm), each with a long and a short path, both
ways (what must match and what must not).
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from agent_harness import policy_events as posted
from agent_harness import start_with_policies

pytestmark = pytest.mark.kernel

BASE = pathlib.Path("/tmp/thpf")
DEEP = BASE / "/".join(["d" * 60] * 5)          # 300+ bytes of directories

POLICIES = {
    "pf-open": """
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args:
    - index: 6
      type: string
    selectors:
    - matchArgs:
      - index: 0
        operator: Prefix
        values: ["/tmp/thpf/"]
      - index: 0
        operator: Postfix
        values: ["/thpf-target"]
""",
    "pf-exec": """
  kprobes:
  - call: security_bprm_check
    syscall: false
    args:
    - index: 0
      type: linux_binprm
    selectors:
    - matchArgs:
      - index: 0
        operator: Postfix
        values: ["/thpf-exe"]
""",
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    shutil.rmtree(BASE, ignore_errors=True)
    DEEP.mkdir(parents=True)
    a = start_with_policies(tmp_path_factory, POLICIES)
    assert "not active" not in a.log_text().lower()
    yield a
    a.stop()
    shutil.rmtree(BASE, ignore_errors=True)


def test_postfix_sees_the_end_of_a_long_string(agent):
    long_hit, long_miss = DEEP / "thpf-target", DEEP / "thpf-target-not"
    short_hit = BASE / "thpf-target"
    assert len(str(long_hit)) > 300
    for p in (long_hit, long_miss, short_hit):
        p.write_text("x")
    for p in (long_hit, long_miss, short_hit):       # opened again, read-only: the events we count
        with open(p):
            pass
    agent.wait_events(lambda e: e.get("process_tracepoint", {}).get("policy_name") == "pf-open", 4)
    seen = [e["args"][0]["string_arg"] for e in posted(agent, "pf-open")]
    # the long path's slot holds its first 252 bytes only; both opens of each match
    assert seen.count(str(short_hit)) == 2
    assert sum(1 for s in seen if str(long_hit).startswith(s) and s != str(short_hit)) == 2
    assert len(seen) == 4           # never the -not path


def test_postfix_sees_the_end_of_a_long_path(agent):
    exes = [DEEP / "thpf-exe", DEEP / "thpf-exe-not", BASE / "thpf-exe"]   # the last: short, a marker
    for exe in exes:
        shutil.copy2("/bin/true", exe)
        subprocess.run([str(exe)], check=True)
    agent.wait_events(lambda e: e.get("process_kprobe", {}).get("policy_name") == "pf-exec", 2)
    paths = [e["args"][0]["linux_binprm_arg"]["path"] for e in posted(agent, "pf-exec")]
    assert len(paths) == 2 and paths[1] == str(exes[2])
    assert str(exes[0]).startswith(paths[0]) and len(paths[0]) == 252     # the slot: the start
