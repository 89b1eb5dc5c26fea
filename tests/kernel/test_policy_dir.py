"""policies.d applied live, on the kernel the tests run on (this host's
raw_tp fallbacks, BPF-LSM/kprobes in the guests of tests/vm).

One agent (with its control socket) watches one directory for the whole
module: under emulation an agent start costs seconds.  Each test works with
names of its own (a unique miner path /tmp/<unique>-miner, a copy of
/usr/bin/true, and policy names) and leaves the directory empty and every
policy unloaded behind it.  Exit status -9 means the policy enforced, 0 that
the program ran.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from agent_harness import SLOWDOWN, RunningAgent
from tetrahost.cli import tetra
from kernel_expect import exec_kill_method, features, not_applicable

pytestmark = [pytest.mark.kernel, pytest.mark.needs_root]
REPO = pathlib.Path(__file__).resolve().parents[2]

# The Sigkill-on-exec policy the tests of the policy directory share ({name}, {targets}).
POLICY = (REPO / "tests/policies/kill-exec.yaml.in").read_text()
# Override on security_file_open of one path ({name}, {path}).
DENY_OPEN = (REPO / "tests/policies/deny-open.yaml.in").read_text()


def policy(name: str, *targets: str) -> str:
    return POLICY.format(name=name, targets=json.dumps(list(targets)))


def eventually(cond, what: str, agent, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout * SLOWDOWN
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}; agent log:\n{agent.log_text()}")
        time.sleep(0.05)


class Env:
    """The module's agent and directory; a test's own names come from begin()."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "policies.d"
        self.dir.mkdir()
        self.sock = tmp_path / "control.sock"
        self.agent = RunningAgent(tmp_path, "--policy-dir", str(self.dir), "--socket", str(self.sock))

    def begin(self) -> None:
        self.uid = uuid.uuid4().hex[:10]
        self.name = f"m-{self.uid}"
        self.miner = pathlib.Path(f"/tmp/{self.uid}-miner")
        shutil.copy2("/usr/bin/true", self.miner)

    def end(self) -> None:
        """Empty the directory and wait until the agent has unloaded it all."""
        for path in self.dir.iterdir():
            path.unlink()
        eventually(lambda: (lambda st: not st["policies"] and not st["policy_errors"])(self.status()),
                   "every policy is unloaded", self.agent)
        self.miner.unlink(missing_ok=True)

    def run_miner(self, target=None) -> int:
        return subprocess.run([str(target or self.miner)]).returncode

    def wait_rc(self, rc: int, target=None, timeout: float = 15) -> float:
        """Exec the target until it exits with rc; seconds it took.  A generous
        deadline: a reload is ~0.1 s, but other work may share the CPUs."""
        start = time.monotonic()
        deadline = start + timeout * SLOWDOWN
        while time.monotonic() < deadline:
            if self.run_miner(target) == rc:
                return time.monotonic() - start
            time.sleep(0.01)
        raise AssertionError(f"{target or self.miner} never exited {rc}; agent log:\n{self.agent.log_text()}")

    def tetra(self, *args, check=True):
        """`tetra ARGS` run in this process (its main(), as the command runs
        it): a new interpreter per call costs seconds under emulation."""
        out, err = io.StringIO(), io.StringIO()
        rc = tetra.main([*args, "--socket", str(self.sock)], stdin=io.StringIO(), stdout=out, stderr=err)
        proc = subprocess.CompletedProcess(["tetra", *args], rc, out.getvalue(), err.getvalue())
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def status(self) -> dict:
        return json.loads(self.tetra("status", "-o", "json").stdout)

    def listed(self, name: str) -> dict:
        (p,) = [p for p in json.loads(self.tetra("tracingpolicy", "list", "-o", "json").stdout) if p["name"] == name]
        return p


@pytest.fixture(scope="module")
def agent_env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("policy-dir"))
    yield e
    e.agent.stop()


@pytest.fixture
def env(agent_env):
    agent_env.begin()
    yield agent_env
    agent_env.end()


def test_create_enforces_and_delete_releases(env):
    assert env.run_miner() == 0
    (env.dir / "miner.yaml").write_text(policy(env.name, str(env.miner)))
    env.wait_rc(-9)
    (env.dir / "miner.yaml").unlink()
    env.wait_rc(0)
    # the hook is detached before the agent logs it: the line may come just after
    eventually(lambda: f"unloaded {env.name}" in env.agent.log_text(), "the agent logs the unload", env.agent)


def test_replace_never_leaves_a_gap(env):
    reloads_before = env.status()["policy_reloads"]["ok"]
    path = env.dir / "miner.yaml"
    path.write_text(policy(env.name, str(env.miner)))
    env.wait_rc(-9)
    results, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():      # ~200 execs/s: the agent keeps up, so each write is its own replace
            results.append(env.run_miner())
            time.sleep(0.003)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for i in range(12):
            text = policy(env.name, str(env.miner), f"/tmp/{env.uid}-other{i}")
            if i % 2:      # editor style: write a temp file, rename over
                tmp = env.dir / f".miner.yaml.tmp{i}"
                tmp.write_text(text)
                os.rename(tmp, path)
            else:          # in place
                path.write_text(text)
            time.sleep(0.25 * SLOWDOWN)
    finally:
        stop.set()
        t.join()
    assert len(results) > 20
    assert set(results) == {-9}, f"the miner ran during a replace: {results.count(0)} of {len(results)}"
    # kill events of retired hooks still count; the last ones may still be on their way
    eventually(lambda: env.listed(env.name)["enforcements"] >= len(results) - 5,
               f"{len(results) - 5} enforcements counted", env.agent)
    p = env.listed(env.name)
    # writes closer together than a reload takes are coalesced into one replace
    # (how many depends on the machine's load): at least one replace happened
    assert p["generation"] >= 2 and p["state"] == "enforcing"
    assert env.status()["policy_reloads"]["ok"] - reloads_before >= 2


def test_broken_new_version_keeps_the_old_one(env):
    path = env.dir / "miner.yaml"
    path.write_text(policy(env.name, str(env.miner)))
    env.wait_rc(-9)
    # The agent serves the whole module: its count of failed reloads is cumulative
    # (an earlier test's in-place rewrites can fail a read of a half-written file).
    failed_before = env.status()["policy_reloads"]["failed"]
    path.write_text(policy(env.name, str(env.miner)).replace("Sigkill", "Explode"))
    deadline = time.monotonic() + 5 * SLOWDOWN
    while env.status()["policy_reloads"]["failed"] <= failed_before:
        assert time.monotonic() < deadline, env.agent.log_text()
        time.sleep(0.05)
    assert env.run_miner() == -9
    st = env.status()
    assert st["health"] == "degraded" and str(path) in st["policy_errors"]
    p = env.listed(env.name)
    assert p["state"] == "enforcing" and p["pending_errors"]
    assert "keeps running" in env.tetra("tracingpolicy", "list").stdout
    path.write_text(policy(env.name, "/tmp/nothing-here"))      # fixed: the new version takes over
    env.wait_rc(0)
    assert env.status()["health"] == "ok"


def test_half_written_file_is_not_loaded_until_closed(env):
    text = policy(env.name, str(env.miner))
    before = env.status()["policy_reloads"]
    with open(env.dir / "miner.yaml", "w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        time.sleep(0.6 * SLOWDOWN)       # well past the debounce
        assert env.status()["policy_reloads"] == before
        assert env.run_miner() == 0
        f.write(text[len(text) // 2:])
    env.wait_rc(-9)
    assert env.status()["policy_reloads"]["failed"] == before["failed"]


def test_rename_away_and_back(env):
    path = env.dir / "miner.yaml"
    path.write_text(policy(env.name, str(env.miner)))
    env.wait_rc(-9)
    os.rename(path, env.dir / "miner.yaml.disabled")      # not a policy name: unloaded
    env.wait_rc(0)
    os.rename(env.dir / "miner.yaml.disabled", env.dir / "renamed.yml")
    env.wait_rc(-9)
    assert env.listed(env.name)["file"] == str(env.dir / "renamed.yml")


def test_ignored_names(env):
    for name in ("miner.yaml~", ".miner.yaml", ".#miner.yaml", "miner.yaml.swp", "miner.txt", "miner.json"):
        (env.dir / name).write_text(policy(env.name, str(env.miner)))
    time.sleep(0.5 * SLOWDOWN)
    assert env.run_miner() == 0
    assert env.status()["policies"] == []


def test_duplicate_name_is_an_error_naming_both_files(env):
    a, b = env.dir / "a.yaml", env.dir / "b.yaml"
    a.write_text(policy(f"same-{env.uid}", str(env.miner)))
    env.wait_rc(-9)
    other = pathlib.Path(f"/tmp/{env.uid}-miner2")
    shutil.copy2("/usr/bin/true", other)
    try:
        b.write_text(policy(f"same-{env.uid}", str(other)))
        deadline = time.monotonic() + 5 * SLOWDOWN
        while str(b) not in env.status()["policy_errors"]:
            assert time.monotonic() < deadline, env.agent.log_text()
            time.sleep(0.05)
        (msg,) = env.status()["policy_errors"][str(b)]
        assert str(a) in msg and str(b) in msg
        assert env.run_miner(other) == 0 and env.run_miner() == -9
        a.unlink()          # the owner goes away: the other file is retried and loads
        env.wait_rc(-9, other)
        env.wait_rc(0)
    finally:
        other.unlink(missing_ok=True)


def test_tracingpolicy_add_delete_check(env, tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    name = f"via-cli-{env.uid}"
    good.write_text(policy(name, str(env.miner)))
    bad.write_text(policy("broken", str(env.miner)).replace("Sigkill", "Explode"))
    assert env.tetra("tracingpolicy", "check", str(good)).stdout.startswith(f"OK {name}")
    assert env.tetra("tracingpolicy", "check", str(bad), check=False).returncode == 1
    refused = env.tetra("tracingpolicy", "add", str(bad), check=False)
    assert refused.returncode == 1 and "Explode" in refused.stderr
    assert list(env.dir.iterdir()) == []
    out = env.tetra("tracingpolicy", "add", str(good)).stdout
    assert f"added {name}" in out and "enforcing" in out
    assert (env.dir / "good.yaml").read_text() == good.read_text()
    assert env.run_miner() == -9          # applied before add returned
    listing = env.tetra("tracingpolicy", "list").stdout
    assert f"{name}  state=enforcing" in listing and exec_kill_method() in listing, listing
    dup = env.tetra("tracingpolicy", "add", str(good), "--name", "again.yaml", check=False)
    assert dup.returncode == 1 and "already loaded" in dup.stderr
    assert f"deleted {name}" in env.tetra("tracingpolicy", "delete", name).stdout
    assert not (env.dir / "good.yaml").exists()
    assert env.run_miner() == 0
    assert env.tetra("tracingpolicy", "delete", name, check=False).returncode == 1


def denied(path: pathlib.Path) -> bool:
    try:
        path.open().close()
        return False
    except PermissionError:
        return True


def test_file_open_override_add_replace_broken_delete(env):
    """An Override on security_file_open, which needs the open refused before it
    happens (BPF-LSM, fmod_ret or bpf_override_return), added, replaced by a
    version that protects another path, broken (the previous version keeps
    enforcing) and deleted."""
    f = features()
    if not (f.lsm or f.fmod_ret or (f.kprobe and f.override_return)):
        not_applicable("an Override on security_file_open needs BPF-LSM, fmod_ret or bpf_override_return")
    a, b = pathlib.Path(f"/tmp/{env.uid}-a"), pathlib.Path(f"/tmp/{env.uid}-b")
    for path in (a, b):
        path.write_text("x")
    try:
        assert not denied(a) and not denied(b)
        name = f"deny-{env.uid}"
        (env.dir / "deny.yaml").write_text(DENY_OPEN.format(name=name, path=a))
        eventually(lambda: denied(a), "the added policy denies a", env.agent)
        assert not denied(b)
        method = "BPF-LSM file_open" if f.lsm else "fmod_ret security_file_open" if f.fmod_ret else "bpf_override_return"
        assert method in env.listed(name)["hooks"][0]["attach"], env.listed(name)

        # replace, as editors save: write a temp file, rename over the original
        tmp = env.dir / ".deny.yaml.swp"
        tmp.write_text(DENY_OPEN.format(name=name, path=b))
        os.rename(tmp, env.dir / "deny.yaml")
        eventually(lambda: denied(b) and not denied(a), "the replacement denies b and no longer a", env.agent)

        # a broken version is rejected and the running one keeps enforcing
        (env.dir / "deny.yaml").write_text(DENY_OPEN.format(name=name, path=b).replace("operator: Equal",
                                                                                       "operator: Equl"))
        eventually(lambda: "Equl" in env.agent.log_text(), "the agent reports the broken file", env.agent)
        assert denied(b) and not denied(a)

        # delete: nothing is denied any more
        (env.dir / "deny.yaml").unlink()
        eventually(lambda: not denied(b), "the deleted policy stops enforcing", env.agent)
    finally:
        a.unlink()
        b.unlink()


def test_set_mode_disable_enable_are_kept_across_a_restart(tmp_path):
    """tetra tracingpolicy set-mode / disable / enable: applied before the command
    returns, and what the operator decided is what the next agent runs."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Env(tmp_path / "a")
    first.begin()
    name, monitor_only = first.name, f"post-{first.uid}"
    try:
        (first.dir / "miner.yaml").write_text(policy(name, str(first.miner)))
        (first.dir / "watch.yaml").write_text(policy(monitor_only, "/nonexistent/x").replace("Sigkill", "Post"))
        first.wait_rc(-9)
        eventually(lambda: monitor_only in {p["name"] for p in first.status()["policies"]},
                   f"{monitor_only} is loaded", first.agent)
        out = first.tetra("tracingpolicy", "set-mode", name, "monitor").stdout
        assert f"{name}: monitoring, mode monitor" in out
        assert first.run_miner() == 0                    # the enforcing version is gone already
        assert first.listed(name)["generation"] == 2
        assert f"{name}: disabled" in first.tetra("tracingpolicy", "disable", name).stdout
        p = first.listed(name)
        assert p["state"] == "disabled" and p["hooks"] == [], p
        assert first.status()["health"] == "ok"          # the operator's choice is not a fault
        refused = first.tetra("tracingpolicy", "set-mode", monitor_only, "enforce", check=False)
        assert refused.returncode == 1 and "monitor only" in refused.stderr
        missing = first.tetra("tracingpolicy", "enable", f"none-{first.uid}", check=False)
        assert missing.returncode == 1 and "no policy named" in missing.stderr
        kept = json.loads((first.dir / ".tetrahost-policy-state.json").read_text())
        assert kept == {name: {"enabled": False, "mode": "monitor"}}
    finally:
        first.agent.stop()
    second = Env.__new__(Env)                  # the next agent, same directory and decisions
    second.dir, second.sock, second.miner = first.dir, tmp_path / "b.sock", first.miner
    second.agent = RunningAgent(tmp_path / "b", "--policy-dir", str(second.dir), "--socket", str(second.sock))
    try:
        assert second.listed(name)["state"] == "disabled"
        assert second.run_miner() == 0
        assert f"{name}: monitoring" in second.tetra("tracingpolicy", "enable", name).stdout
        assert second.run_miner() == 0
        assert f"{name}: enforcing" in second.tetra("tracingpolicy", "set-mode", name, "enforce").stdout
        assert second.run_miner() == -9
    finally:
        second.agent.stop()
        first.miner.unlink(missing_ok=True)
