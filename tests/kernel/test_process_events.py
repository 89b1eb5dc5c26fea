"""The process sensor end to end on this machine's kernel: real execs in,
Tetragon-shaped JSON out of the real agent (`tetrahost run`)."""
from __future__ import annotations

import base64
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from agent_harness import RunningAgent, execs_of, exits_of

from tetrahost.events.text import text_to_bytes

pytestmark = pytest.mark.kernel

NOBODY = 65534


@pytest.fixture
def world_dir():
    """A directory every user can enter (pytest's tmp_path is 0700 root-only)."""
    d = tempfile.mkdtemp(prefix="th-test-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


@pytest.fixture
def prog(world_dir):
    """A uniquely named copy of sh: events for it are ours alone."""
    path = world_dir / "th-prog"
    shutil.copy2("/bin/sh", path)
    return str(path)


@pytest.fixture
def agent(tmp_path):
    a = RunningAgent(tmp_path)
    yield a
    assert a.stop() == 0, a.log_text()


def test_200_execs_and_exits_from_a_known_parent(agent, prog, world_dir):
    workdir = world_dir / "work dir"
    workdir.mkdir()
    os.chmod(workdir, 0o755)
    parent_bin = prog + "-parent"
    shutil.copy2("/bin/sh", parent_bin)
    script = f'i=0; while [ $i -lt 200 ]; do i=$((i+1)); {prog} -c "exit 7" "arg $i" second; done; exit 0'
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    parent_bin, "-c", script], cwd=workdir, check=True)

    execs = agent.wait_events(execs_of(prog), 200)
    exits = agent.wait_events(exits_of(prog), 200)
    parent_exec = agent.wait_events(execs_of(parent_bin), 1)
    assert len(execs) == 200 and len(exits) == 200 and len(parent_exec) == 1
    parent_id = parent_exec[0]["process_exec"]["process"]["exec_id"]

    seen_args = set()
    for e in execs:
        p = e["process_exec"]["process"]
        assert p["uid"] == NOBODY and p["process_credentials"]["euid"] == NOBODY
        assert p["cwd"] == str(workdir)
        assert p["parent_exec_id"] == parent_id
        assert e["process_exec"]["parent"]["binary"] == parent_bin
        assert "execve" in p["flags"].split()
        seen_args.add(p["arguments"])
        node, ktime, pid = base64.b64decode(p["exec_id"]).decode().split(":")
        assert int(pid) == p["pid"] and int(ktime) > 0
    assert seen_args == {f'-c "exit 7" "arg {i}" second' for i in range(1, 201)}
    assert {x["process_exit"]["status"] for x in exits} == {7}
    assert not any(x["process_exit"].get("signal") for x in exits)
    assert {x["process_exit"]["process"]["exec_id"] for x in exits} == \
        {e["process_exec"]["process"]["exec_id"] for e in execs}


def test_killed_child_reports_the_signal(agent, prog):
    rc = subprocess.run([prog, "-c", "kill -KILL $$"]).returncode
    assert rc == -9
    (ev,) = agent.wait_events(exits_of(prog), 1)
    assert ev["process_exit"]["signal"] == "SIGKILL"


def test_process_started_before_the_agent_has_procfs_flag_and_parent(tmp_path, prog):
    sleeper = subprocess.Popen([prog, "-c", "read x"], stdin=subprocess.PIPE)
    agent = RunningAgent(tmp_path)
    try:
        sleeper.communicate(b"\n", timeout=10)
        (ev,) = agent.wait_events(exits_of(prog), 1)
        p = ev["process_exit"]["process"]
        assert p["pid"] == sleeper.pid
        assert "procFS" in p["flags"].split()
        parent = ev["process_exit"]["parent"]
        assert parent["pid"] == os.getpid()
        assert p["parent_exec_id"] == parent["exec_id"]
    finally:
        assert agent.stop() == 0


def test_new_pid_and_mount_namespace_is_not_host(agent, prog):
    subprocess.run(["unshare", "--pid", "--mount", "--fork", prog, "-c", "exit 0"], check=True)
    subprocess.run([prog, "-c", "exit 0"], check=True)
    evs = agent.wait_events(execs_of(prog), 2)
    inside, outside = sorted(evs, key=lambda e: e["process_exec"]["process"]["ns"]["pid"].get("is_host", False))
    ns_in = inside["process_exec"]["process"]["ns"]
    ns_out = outside["process_exec"]["process"]["ns"]
    for kind in ("pid", "mnt"):
        assert ns_in[kind]["inum"] != ns_out[kind]["inum"]
        assert not ns_in[kind].get("is_host", False)
        assert ns_out[kind]["is_host"] is True
    assert ns_in["net"]["inum"] == ns_out["net"]["inum"]


def test_long_argv_is_cut_with_flag_not_garbled(agent, prog):
    args = [f"a{i:03d}" + "x" * 95 for i in range(100)]       # 100 x 100 bytes > 4096
    subprocess.run([prog, "-c", "exit 0", *args], check=True)
    (ev,) = agent.wait_events(execs_of(prog), 1)
    p = ev["process_exec"]["process"]
    assert "truncArgs" in p["flags"].split()
    words = p["arguments"].split(" ")
    assert words[:3] == ['-c', '"exit', '0"']
    kept = words[3:]
    assert 30 < len(kept) < 100
    assert kept[:-1] == args[:len(kept) - 1]                   # whole arguments intact
    assert args[len(kept) - 1].startswith(kept[-1])            # the last one cut, not mangled


def test_binary_path_with_space_and_non_utf8_byte_round_trips(agent, tmp_path):
    d = os.path.join(os.fsencode(tmp_path), b"dir with space")
    os.mkdir(d)
    path = os.path.join(d, b"prog-\xff\xfe")
    shutil.copy2("/bin/sh", path)
    subprocess.run([path, b"-c", b"exit 0", b"arg-\xff"], check=True)
    (ev,) = agent.wait_events(lambda e: "process_exec" in e and
                              text_to_bytes(e["process_exec"]["process"]["binary"]) == path, 1)
    p = ev["process_exec"]["process"]
    assert p["binary"].endswith("/prog-\\xff\\xfe")            # valid UTF-8: bytes as \xNN
    p["binary"].encode("utf-8", "strict")
    assert text_to_bytes(p["binary"]) == path
    assert text_to_bytes(p["arguments"]).endswith(b"arg-\xff")
