"""spec.uprobes on this machine's kernel: a function of a program of ours,
and bash's readline.

A tiny C program (built here with cc, under a unique name so no other
process on the host is probed) calls th_secret_check(int code, const char
*word) once with its arguments.  Policy "up-<id>" probes it with [int, string]
args: selector 0 kills a call whose word is "killme", selector 1 posts every
other call.  Policy "upf-<id>" posts only calls with code 42 (matchArgs
evaluated in the kernel): a call with another code must produce no event of it.
"""
from __future__ import annotations

import os
import pathlib
import pty
import shutil
import signal
import subprocess
import uuid

import pytest

from c_programs import KILL_OR_POST, ONLY_42, compile_c
from agent_harness import RunningAgent, policy_events, policy_text
from kernel_expect import features, not_applicable

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

ID = uuid.uuid4().hex[:10]
SYMBOL = "th_secret_check"
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* not inlined, not optimised away: the uprobe needs a real call */
__attribute__((noinline)) int th_secret_check(int code, const char *word)
{
	__asm__ volatile("" ::: "memory");
	return code + (int)strlen(word);
}

int main(int argc, char **argv)
{
	int code = argc > 1 ? atoi(argv[1]) : 0;
	const char *word = argc > 2 ? argv[2] : "";

	printf("%d\n", th_secret_check(code, word));
	return 0;
}
"""


def uprobe_spec(binary: str, selectors: str) -> str:
    return f"""
  uprobes:
  - path: "{binary}"
    symbols:
    - "{SYMBOL}"
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    selectors:{selectors}
"""




@pytest.fixture(scope="module")
def target(tmp_path_factory) -> pathlib.Path:
    if not features().uprobe:
        not_applicable("uprobes do not load or attach here (`tetrahost probe`: uprobe)")
    return compile_c(PROGRAM, tmp_path_factory.mktemp("uprobe-target") / f"th-uprobe-{ID}", "-O1")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, target):
    d = tmp_path_factory.mktemp("policies")
    args = []
    for name, selectors in ((f"up-{ID}", KILL_OR_POST), (f"upf-{ID}", ONLY_42)):
        (d / f"{name}.yaml").write_text(policy_text(name, uprobe_spec(str(target), selectors)))
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    yield a
    assert a.stop() == 0


def of_pid(events: list[dict], pid: int) -> list[dict]:
    return [e for e in events if e["process"]["pid"] == pid]


def test_a_call_is_posted_with_path_symbol_and_arguments(agent, target):
    proc = subprocess.Popen([str(target), "7", "hello"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "12\n")
    events = of_pid(policy_events(agent, f"up-{ID}", 1), proc.pid)
    assert len(events) == 1, events
    e = events[0]
    assert (e["path"], e["symbol"]) == (str(target), SYMBOL)
    assert e["args"] == [{"int_arg": 7}, {"string_arg": "hello"}]
    assert e["process"]["binary"] == str(target)
    assert e["action"] == "KPROBE_ACTION_POST" and e["selector"] == 1
    assert e["attach"].startswith(f"uprobe {target}:{SYMBOL}")


def test_sigkill_on_a_matching_argument_kills_the_caller(agent, target):
    proc = subprocess.Popen([str(target), "3", "killme"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and out == ""    # killed before printf
    events = of_pid(policy_events(agent, f"up-{ID}", 1), proc.pid)
    assert len(events) == 1, events
    assert events[0]["args"] == [{"int_arg": 3}, {"string_arg": "killme"}]
    assert (events[0]["action"], events[0]["signal"]) == ("KPROBE_ACTION_SIGKILL", "SIGKILL")


def test_a_call_no_selector_matches_leaves_no_event(agent, target):
    """Policy upf posts code 42 only: the call with 41 is filtered in the kernel."""
    calls = {code: subprocess.Popen([str(target), str(code), "x"], stdout=subprocess.DEVNULL)
             for code in (41, 42)}
    for p in calls.values():
        assert p.wait(timeout=30) == 0
    events = policy_events(agent, f"upf-{ID}", 1)      # waits for 42, then settles
    assert of_pid(events, calls[42].pid) and all(e["args"][0] == {"int_arg": 42} for e in events)
    assert not of_pid(events, calls[41].pid)
    # the other policy saw both calls: the filter is per policy, not a missed probe
    posted = policy_events(agent, f"up-{ID}")
    assert of_pid(posted, calls[41].pid) and of_pid(posted, calls[42].pid)


def _bash_exports_readline(bash: str) -> bool:
    nm = shutil.which("nm")
    if nm is None:
        pytest.fail("no nm (binutils) to read bash's dynamic symbols")
    out = subprocess.run([nm, "-D", "--defined-only", bash], capture_output=True, text=True).stdout
    return any(line.split()[-1:] == ["readline"] for line in out.splitlines())


def test_bash_readline(tmp_path, target):
    """Tetragon's own example: readline of an interactive bash, by symbol."""
    bash = "/bin/bash"
    if not os.path.exists(bash) or not _bash_exports_readline(bash):
        not_applicable(f"{bash} does not export readline as a dynamic symbol here")
    name = f"upbash-{ID}"
    (tmp_path / "p.yaml").write_text(policy_text(name, f"""
  uprobes:
  - path: "{bash}"
    symbols:
    - "readline"
"""))
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = RunningAgent(agent_dir, "--policy", str(tmp_path / "p.yaml"))
    try:
        pid, fd = pty.fork()
        if pid == 0:                # an interactive bash on a terminal reads its lines with readline
            os.execv(bash, [bash, "--norc", "--noprofile", "-i"])
        os.write(fd, b"exit\n")
        _drain(fd)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        events = of_pid(policy_events(agent, name, 1), pid)
        assert events and all((e["path"], e["symbol"]) == (bash, "readline") for e in events)
    finally:
        assert agent.stop() == 0


def _drain(fd: int) -> None:
    """Read the terminal until bash closes it (it would block on a full pty)."""
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except OSError:             # EIO: the other side is closed
            return
