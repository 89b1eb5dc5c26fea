"""File-open hooks (security_file_open) on any kernel.

Where kprobes or fentry exist the hook is the function itself; where they do
not (this project's CI host), the completed open is seen at the exit of the
open family and its descriptor resolved to the file in the kernel.  Either
way an open is matched by the file's real path: an absolute path, a relative
one and a symlink to the file give the same event, and Sigkill stops the
opener before it can use what it opened.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import uuid

import pytest

from agent_harness import RunningAgent, policy_events, policy_text
from test_seed_policies_host import seed

pytestmark = pytest.mark.kernel
SEED_NAME = "monitor-sensitive-files"


def open_and_close(path: str, cwd: str | None = None) -> None:
    fd = os.open(path, os.O_RDONLY, dir_fd=None) if cwd is None else _open_in(path, cwd)
    os.close(fd)


def _open_in(path: str, cwd: str) -> int:
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(cwd)
        return os.open(path, os.O_RDONLY)
    finally:
        os.fchdir(home)
        os.close(home)


def file_open_hook(operator: str, value: str, action: str = "") -> str:
    """A security_file_open hook matching its file argument (the spec body)."""
    actions = f"\n      matchActions:\n      - action: {action}" if action else ""
    return f"""
  kprobes:
  - call: security_file_open
    syscall: false
    args:
    - index: 0
      type: file
    selectors:
    - matchArgs:
      - index: 0
        operator: {operator}
        values: ["{value}"]{actions}
"""


def mine(bodies: list[dict]) -> list[dict]:
    return [b for b in bodies if b["process"]["pid"] == os.getpid()]


def test_sensitive_file_opened_three_ways_gives_three_events(tmp_path):
    agent = RunningAgent(tmp_path, "--policy", seed(SEED_NAME))
    try:
        log = agent.log_text()
        assert "not active" not in log.lower(), log
        link = tmp_path / "innocent-name"
        link.symlink_to("/etc/shadow")
        open_and_close("/etc/shadow")
        open_and_close("shadow", cwd="/etc")
        open_and_close(str(link))
        open_and_close("/etc/hostname")              # not under a Prefix value: no event
        agent.wait_events(lambda e: any(b["process"]["pid"] == os.getpid()
                                        for b in [e.get("process_kprobe", {})] if b), 3)
        bodies = mine(policy_events(agent, SEED_NAME))
    finally:
        agent.stop()
    assert len(bodies) == 3, bodies
    for body in bodies:
        assert body["function_name"] == "security_file_open"
        assert body["args"][0]["file_arg"]["path"] == "/etc/shadow"
        assert body["action"] == "KPROBE_ACTION_POST"


def test_sigkill_on_open_stops_the_reader(tmp_path):
    secret = pathlib.Path(f"/tmp/th-secret-{uuid.uuid4().hex[:8]}")
    secret.write_text("the secret\n")
    name = f"kill-open-{secret.name[-8:]}"
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text(name, file_open_hook("Equal", str(secret), action="Sigkill")))
    agent = RunningAgent(tmp_path, "--policy", str(policy))
    try:
        assert "not active" not in agent.log_text().lower(), agent.log_text()
        cat = subprocess.run(["cat", str(secret)], capture_output=True)
        other = subprocess.run(["cat", "/etc/hostname"], capture_output=True)
        bodies = policy_events(agent, name, 1)
    finally:
        agent.stop()
        secret.unlink()
    assert cat.returncode == -9 and cat.stdout == b"", "the reader was not stopped before it read"
    assert other.returncode == 0
    # one open, one kill, one event (/tmp is an overlayfs in the test guests:
    # test_an_open_on_overlayfs_is_one_event)
    assert [b["action"] for b in bodies] == ["KPROBE_ACTION_SIGKILL"], bodies
    assert bodies[0]["args"][0]["file_arg"]["path"] == str(secret)


UNSHARE_THEN_OPEN = r"""
import ctypes, os, sys
def inum(kind):
    return int(os.readlink(f"/proc/self/ns/{kind}").split("[")[1].rstrip("]"))
before = inum("uts")
if ctypes.CDLL(None, use_errno=True).unshare(0x04000000):     # CLONE_NEWUTS
    sys.exit(f"unshare: {os.strerror(ctypes.get_errno())}")
print(before, inum("uts"), flush=True)
os.close(os.open(sys.argv[1], os.O_RDONLY))
"""


def test_an_event_carries_the_namespaces_the_opener_has_at_the_open(tmp_path):
    """A policy with no namespace selector reads the caller's namespaces only
    for an event that matched (TH_CFG_NEEDS_NS): still the opener's own at
    that moment, here a UTS namespace it entered after its exec (the process
    cache still has the one of its exec)."""
    target = tmp_path / f"ns-{uuid.uuid4().hex[:8]}"
    target.write_text("x\n")
    name = f"ns-open-{target.name[-8:]}"
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text(name, file_open_hook("Equal", str(target))))
    agent = RunningAgent(tmp_path, "--policy", str(policy))
    try:
        run = subprocess.run([sys.executable, "-c", UNSHARE_THEN_OPEN, str(target)],
                             capture_output=True, text=True, check=True)
        bodies = policy_events(agent, name, 1)
    finally:
        agent.stop()
    before, after = map(int, run.stdout.split())
    assert before != after
    assert len(bodies) == 1, bodies
    assert bodies[0]["process"]["ns"]["uts"]["inum"] == after, bodies[0]["process"]["ns"]
    assert bodies[0]["process"]["ns"]["mnt"]["inum"] == os.stat("/proc/self/ns/mnt").st_ino


def test_an_open_on_overlayfs_is_one_event(tmp_path):
    """On an overlayfs (containers' root, the test guests' /tmp) the kernel
    opens the file beneath for every open of the overlay file, and calls
    security_file_open for both: one access must still be one event (the
    backing file's call is skipped in the kernel, csrc/events.h th_file_mode),
    for a file of the lower layer and one of the upper."""
    root = tmp_path / "ovl"
    root.mkdir()
    # on a tmpfs of its own: an overlayfs cannot take its upper layer from
    # another overlayfs (the guests' /tmp is one)
    subprocess.run(["mount", "-t", "tmpfs", "th-ovl", str(root)], check=True)
    dirs = {n: root / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["lower"] / "from-lower").write_text("l\n")
    mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}",
                            str(dirs["merged"])], capture_output=True, text=True)
    assert mount.returncode == 0, f"cannot mount an overlayfs here: {mount.stderr}"
    name = f"ovl-open-{uuid.uuid4().hex[:8]}"
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text(name, file_open_hook("Prefix", f"{dirs['merged']}/")))
    try:
        (dirs["merged"] / "in-upper").write_text("u\n")
        (tmp_path / "agent").mkdir()
        agent = RunningAgent(tmp_path / "agent", "--policy", str(policy))
        try:
            assert "not active" not in agent.log_text().lower(), agent.log_text()
            for f in ("from-lower", "in-upper"):
                assert subprocess.run(["cat", str(dirs["merged"] / f)], capture_output=True).returncode == 0
            bodies = policy_events(agent, name, 2)
        finally:
            agent.stop()
    finally:
        subprocess.run(["umount", str(dirs["merged"])], check=False)
        subprocess.run(["umount", str(root)], check=False)
    paths = sorted(b["args"][0]["file_arg"]["path"] for b in bodies if b["process"]["binary"].endswith("/cat"))
    assert paths == [str(dirs["merged"] / "from-lower"), str(dirs["merged"] / "in-upper")], bodies
