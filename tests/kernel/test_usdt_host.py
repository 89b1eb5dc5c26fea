"""spec.usdts on this machine's kernel: USDT points of a program of ours.

A tiny C program (built here with cc and <sys/sdt.h>, under a unique name so
no other process on the host is probed) has two points: thtest:check(code,
word) always fires, with both arguments in memory (-O0: "-4@-4(%rbp)
8@-16(%rbp)"); thtest:guarded(code + 1, word) fires only while its
semaphore is set, which the kernel does while a uprobe with its
ref_ctr_offset is attached; its first argument is in a register.  The
program then prints its `code` (after any Set) and whether the guarded point
was enabled.
"""
from __future__ import annotations

import http.server
import pathlib
import shutil
import threading
import time
import signal
import subprocess
import sys
import uuid

import pytest

from c_programs import KILL_OR_POST, ONLY_42, compile_c
from agent_harness import REPO, RunningAgent, policy_events, policy_text
from kernel_expect import features, not_applicable

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

ID = uuid.uuid4().hex[:10]
PROGRAM = r"""
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <stdlib.h>
#include <sys/sdt.h>

/* <sys/sdt.h> with semaphores: one per point, in .probes; the kernel
 * increments a point's while a probe with its ref_ctr_offset is attached */
volatile unsigned short thtest_check_semaphore __attribute__((section(".probes")));
volatile unsigned short thtest_guarded_semaphore __attribute__((section(".probes")));

int main(int argc, char **argv)
{
	int code = argc > 1 ? atoi(argv[1]) : 0;
	const char *word = argc > 2 ? argv[2] : "";

	DTRACE_PROBE2(thtest, check, code, word);
	if (thtest_guarded_semaphore)
		DTRACE_PROBE2(thtest, guarded, code + 1, word);
	printf("%d %s\n", code, thtest_guarded_semaphore ? "guarded" : "unguarded");
	return 0;
}
"""


def usdt_spec(binary: str, name: str, selectors: str) -> str:
    return f"""
  usdts:
  - path: "{binary}"
    provider: "thtest"
    name: "{name}"
    args:
    - index: 0
      type: int32
    - index: 1
      type: string
    selectors:{selectors}
"""


SET_32 = """
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["setme"]
      matchActions:
      - action: Set
        argIndex: 0
        argValue: 32
"""


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> pathlib.Path:
    if not features().uprobe:
        not_applicable("uprobes do not load or attach here (`tetrahost probe`: uprobe)")
    binary = compile_c(PROGRAM, tmp_path_factory.mktemp("usdt-target") / f"th-usdt-{ID}", "-O0", missing={
        "sys/sdt.h": "<sys/sdt.h> is missing: apt-get install systemtap-sdt-dev (scripts/install-deps.sh)"})
    # nothing attached yet: the guarded point's semaphore is 0
    assert run(binary, "1", "x") == (0, "1 unguarded\n")
    return binary


def run(binary: pathlib.Path, *args: str) -> tuple[int, str]:
    proc = subprocess.run([str(binary), *args], stdout=subprocess.PIPE, text=True, timeout=30)
    return proc.returncode, proc.stdout


class _Canary(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.paths.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def canary():
    """A loopback web server the GetUrl action fetches from."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    srv.paths = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def notify(port: int) -> str:
    return f"""
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["notify"]
      matchActions:
      - action: GetUrl
        argUrl: "http://127.0.0.1:{port}/canary-{ID}"
      - action: DnsLookup
        argFqdn: localhost
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory, target, canary):
    d = tmp_path_factory.mktemp("policies")
    args = []
    for name, point, selectors in ((f"us-{ID}", "check", KILL_OR_POST), (f"usf-{ID}", "check", ONLY_42),
                                   (f"usg-{ID}", "guarded", "\n    - matchActions:\n      - action: Post\n"),
                                   (f"usn-{ID}", "check", notify(canary.server_port))):
        (d / f"{name}.yaml").write_text(policy_text(name, usdt_spec(str(target), point, selectors)))
        args += ["--policy", str(d / f"{name}.yaml")]
    a = RunningAgent(tmp_path_factory.mktemp("agent"), *args)
    yield a
    assert a.stop() == 0


def of_pid(events: list[dict], pid: int) -> list[dict]:
    return [e for e in events if e["process"]["pid"] == pid]


def test_a_point_is_posted_with_provider_name_and_arguments(agent, target):
    proc = subprocess.Popen([str(target), "7", "hello"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.startswith("7 ")
    events = of_pid(policy_events(agent, f"us-{ID}", 1), proc.pid)
    assert len(events) == 1, events
    e = events[0]
    assert (e["path"], e["provider"], e["name"]) == (str(target), "thtest", "check")
    assert e["args"] == [{"int_arg": 7}, {"string_arg": "hello"}]
    assert e["process"]["binary"] == str(target)
    assert e["action"] == "KPROBE_ACTION_POST" and e["selector"] == 1
    assert e["attach"].startswith(f"usdt {target}:thtest:check")


def test_sigkill_on_a_matching_argument_kills_the_program(agent, target):
    proc = subprocess.Popen([str(target), "3", "killme"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and out == ""     # killed at the point, before printf
    events = of_pid(policy_events(agent, f"us-{ID}", 1), proc.pid)
    assert len(events) == 1, events
    assert events[0]["args"] == [{"int_arg": 3}, {"string_arg": "killme"}]
    assert (events[0]["action"], events[0]["signal"]) == ("KPROBE_ACTION_SIGKILL", "SIGKILL")


def test_a_point_no_selector_matches_leaves_no_event(agent, target):
    """Policy usf posts code 42 only: the run with 41 is filtered in the kernel."""
    calls = {code: subprocess.Popen([str(target), str(code), "x"], stdout=subprocess.DEVNULL)
             for code in (41, 42)}
    for p in calls.values():
        assert p.wait(timeout=30) == 0
    events = policy_events(agent, f"usf-{ID}", 1)      # waits for 42, then settles
    assert of_pid(events, calls[42].pid) and all(e["args"][0] == {"int_arg": 42} for e in events)
    assert not of_pid(events, calls[41].pid)
    # the other policy saw both runs: the filter is per policy, not a missed probe
    posted = policy_events(agent, f"us-{ID}")
    assert of_pid(posted, calls[41].pid) and of_pid(posted, calls[42].pid)


def test_the_semaphore_enables_a_guarded_point_while_attached(agent, target):
    """The kernel increments thtest:guarded's semaphore (ref_ctr_offset): the
    program's guard opens and the point fires, its first argument (code + 1)
    read from a register."""
    proc = subprocess.Popen([str(target), "5", "sem"], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "5 guarded\n")
    events = of_pid(policy_events(agent, f"usg-{ID}", 1), proc.pid)
    assert len(events) == 1, events
    assert (events[0]["name"], events[0]["args"]) == ("guarded", [{"int_arg": 6}, {"string_arg": "sem"}])


def test_set_writes_the_argument_in_memory(tmp_path, target):
    """Set argIndex 0 argValue 32 on thtest:check where word is "setme": the
    program prints 32 instead of its own code.  Where the kernel refuses
    bpf_probe_write_user (lockdown), the policy check says so instead and the
    agent does not attach the hook (the program's value is left alone)."""
    name = f"uss-{ID}"
    # a copy of its own: the module's agent still has the guarded point of
    # `target` attached, whose semaphore would switch the program's path
    target = shutil.copy2(target, tmp_path / "set-target")
    policy = tmp_path / "set.yaml"
    policy.write_text(policy_text(name, usdt_spec(str(target), "check", SET_32)))
    if not features().probe_write_user:
        check = subprocess.run([sys.executable, "-m", "tetrahost.cli.main", "policy", "check", str(policy)],
                               capture_output=True, text=True, cwd=REPO)
        assert "CANNOT ATTACH" in check.stdout and "bpf_probe_write_user" in check.stdout, check.stdout
        assert "lockdown" in check.stdout
        not_applicable("bpf_probe_write_user is refused on this kernel (`tetrahost probe`: probe_write_user); "
                       "the policy check says so (checked)")
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = RunningAgent(agent_dir, "--policy", str(policy))
    try:
        assert run(target, "5", "setme") == (0, "32 unguarded\n")
        assert run(target, "5", "other") == (0, "5 unguarded\n")
        events = policy_events(agent, name, 1)
        assert len(events) == 1 and events[0]["args"][1] == {"string_arg": "setme"}
        assert (events[0]["set_arg"], events[0]["set_value"]) == (0, 32) and "set_failed" not in events[0]
    finally:
        assert agent.stop() == 0


def test_geturl_and_dnslookup_run_in_user_space_when_the_selector_matches(agent, target, canary):
    """Policy usn: word "notify" makes the agent fetch the loopback canary URL
    and resolve localhost; the event names the action as Tetragon does."""
    assert run(target, "2", "notify")[0] == 0
    assert run(target, "2", "quiet")[0] == 0
    events = policy_events(agent, f"usn-{ID}", 1)
    assert len(events) == 1 and events[0]["args"][1] == {"string_arg": "notify"}
    assert events[0]["action"] == "KPROBE_ACTION_GETURL"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            canary.paths and "user action DnsLookup localhost: " in agent.log_text()):
        time.sleep(0.05)
    assert canary.paths == [f"/canary-{ID}"]        # once: the "quiet" run matched nothing
    assert "user action DnsLookup localhost: " in agent.log_text()
