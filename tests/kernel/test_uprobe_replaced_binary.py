"""A uprobe follows its binary when a package upgrade replaces it.

A small C program (unique name) calls th_secret_check(int code, const char
*word).  Policy "uprep-<id>" has two uprobe hooks: one on that program
(selector 0 kills a call whose word is "killme", selector 1 posts the
rest), one on a second copy at another path that is never replaced.

The program is then replaced as dpkg does it: the new build (another layout,
so the symbol moves to another offset) is written under a temporary name in
the same directory and renamed over the old path.  The next call of the new
program must be posted and a "killme" call killed.  Replaced again by a
build without the symbol: the hook is reported not active naming the file
and the symbol, while the policy's other hook still posts.  A good build
renamed in once more attaches the hook again.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from c_programs import KILL_OR_POST, compile_c
from agent_harness import SLOWDOWN, RunningAgent, policy_events, policy_text
from kernel_expect import features, not_applicable

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]

ID = uuid.uuid4().hex[:10]
POLICY = f"uprep-{ID}"
SYMBOL = "th_secret_check"

# PAD pads the text before the probed function so that each build has it at
# another offset: a probe left on the old offset would miss.
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

PAD

__attribute__((noinline)) int FUNC(int code, const char *word)
{
	__asm__ volatile("" ::: "memory");
	return code + (int)strlen(word) + VERSION;
}

int main(int argc, char **argv)
{
	int code = argc > 1 ? atoi(argv[1]) : 0;
	const char *word = argc > 2 ? argv[2] : "";

	printf("%d\n", FUNC(code, word));
	return 0;
}
"""


def build(out: pathlib.Path, version: int, func: str = SYMBOL) -> None:
    pad = "\n".join(f"__attribute__((noinline)) int th_pad{i}(int x) {{ __asm__ volatile(\"\"); return x * {i + 3}; }}"
                    for i in range(version * 8))
    compile_c(PROGRAM.replace("PAD", pad).replace("FUNC", func).replace("VERSION", str(version)), out, "-O1")


def symbol_offset(binary: pathlib.Path) -> int:
    out = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout
    return next(int(line.split()[0], 16) for line in out.splitlines() if line.endswith(f" {SYMBOL}"))


def install_like_dpkg(new_build: pathlib.Path, target: pathlib.Path) -> None:
    """Copy to TARGET.dpkg-new in the same directory, then rename over TARGET."""
    tmp = target.with_name(target.name + ".dpkg-new")
    shutil.copyfile(new_build, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not features().uprobe:
        not_applicable("uprobes do not load or attach here (`tetrahost probe`: uprobe)")
    if shutil.which("cc") is None or shutil.which("nm") is None:
        pytest.fail("needs a C compiler (cc) and nm (binutils)")
    d = tmp_path_factory.mktemp("uprobe-replace")
    builds = d / "builds"
    builds.mkdir()
    for version in (1, 2):
        build(builds / f"v{version}", version)
    build(builds / "nosym", 3, func="th_other_check")
    assert symbol_offset(builds / "v1") != symbol_offset(builds / "v2")
    bindir = d / "bin"
    bindir.mkdir()
    target, stable = bindir / f"th-uprep-{ID}", bindir / f"th-uprep-stable-{ID}"
    install_like_dpkg(builds / "v1", target)
    install_like_dpkg(builds / "v1", stable)
    hooks = "".join(f"""
  - path: "{path}"
    symbols:
    - "{SYMBOL}"
    args:
    - index: 0
      type: int
    - index: 1
      type: string
    selectors:{KILL_OR_POST}""" for path in (target, stable))
    pfile = d / f"{POLICY}.yaml"
    pfile.write_text(policy_text(POLICY, "\n  uprobes:" + hooks))
    sock = d / "c.sock"
    agent = RunningAgent(tmp_path_factory.mktemp("agent"), "--policy", str(pfile), "--socket", str(sock))
    yield {"agent": agent, "target": target, "stable": stable, "builds": builds, "sock": sock}
    assert agent.stop() == 0


def call(binary: pathlib.Path, code: int, word: str) -> subprocess.Popen:
    proc = subprocess.Popen([str(binary), str(code), word], stdout=subprocess.PIPE, text=True)
    proc.communicate(timeout=30)
    return proc


def events_of(agent, pid: int, count: int = 1) -> list[dict]:
    agent.wait_events(lambda e: any(v.get("policy_name") == POLICY and v["process"]["pid"] == pid
                                    for k, v in e.items() if k.startswith("process_")), count)
    return [e for e in policy_events(agent, POLICY) if e["process"]["pid"] == pid]


def wait_log(agent, pattern: str, count: int = 1) -> str:
    deadline = time.monotonic() + 20 * SLOWDOWN
    while time.monotonic() < deadline:
        text = agent.log_text()
        if len(re.findall(pattern, text)) >= count:
            return text
        time.sleep(0.05)
    raise AssertionError(f"no log line /{pattern}/ x{count}:\n{agent.log_text()}")


def tetra_status(sock: pathlib.Path) -> str:
    return subprocess.run([sys.executable, "-m", "tetrahost.cli.tetra", "status", "--socket", str(sock)],
                          capture_output=True, text=True, check=True).stdout


def test_1_before_replacement_a_call_is_posted(setup):
    proc = call(setup["target"], 7, "hello")
    assert proc.returncode == 0
    (e,) = events_of(setup["agent"], proc.pid)
    assert e["args"] == [{"int_arg": 7}, {"string_arg": "hello"}]


def test_2_replaced_like_dpkg_the_new_binary_is_probed(setup):
    agent, target = setup["agent"], setup["target"]
    old_inode = target.stat().st_ino
    install_like_dpkg(setup["builds"] / "v2", target)
    assert target.stat().st_ino != old_inode
    log = wait_log(agent, rf"{re.escape(str(target))} \({SYMBOL}\) was replaced \(inode {old_inode} -> "
                          rf"{target.stat().st_ino}\): re-attached to the new file")
    assert "NOT ACTIVE" not in log
    proc = call(target, 5, "abc")
    assert proc.returncode == 0 and proc.stdout is not None
    (e,) = events_of(agent, proc.pid)
    assert e["args"] == [{"int_arg": 5}, {"string_arg": "abc"}] and e["action"] == "KPROBE_ACTION_POST"
    assert "REATTACHED" in tetra_status(setup["sock"])


def test_3_sigkill_still_kills_after_the_replacement(setup):
    proc = call(setup["target"], 3, "killme")
    assert proc.returncode == -signal.SIGKILL
    (e,) = events_of(setup["agent"], proc.pid)
    assert (e["action"], e["args"][1]) == ("KPROBE_ACTION_SIGKILL", {"string_arg": "killme"})


def test_4_replaced_by_a_build_without_the_symbol(setup):
    agent, target = setup["agent"], setup["target"]
    install_like_dpkg(setup["builds"] / "nosym", target)
    wait_log(agent, rf"{POLICY} \(.*\): uprobe {re.escape(str(target))}:{SYMBOL} NOT ACTIVE: "
                    rf"{re.escape(str(target))} \({SYMBOL}\) was replaced and the new file cannot take the hook")
    status = tetra_status(setup["sock"])
    assert f"{POLICY}: partial" in status and "now NOT ACTIVE" in status, status
    # the policy's other hook is untouched
    proc = call(setup["stable"], 9, "still")
    assert proc.returncode == 0
    (e,) = events_of(agent, proc.pid)
    assert e["args"] == [{"int_arg": 9}, {"string_arg": "still"}]


def test_5_a_good_build_renamed_in_attaches_it_again(setup):
    agent, target = setup["agent"], setup["target"]
    install_like_dpkg(setup["builds"] / "v1", target)
    wait_log(agent, rf"{re.escape(str(target))} changed: attached again")
    assert f"{POLICY}: enforcing" in tetra_status(setup["sock"])
    proc = call(target, 1, "back")
    (e,) = events_of(agent, proc.pid)
    assert e["args"] == [{"int_arg": 1}, {"string_arg": "back"}]
    proc = call(target, 1, "killme")
    assert proc.returncode == -signal.SIGKILL
