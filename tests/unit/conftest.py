"""Shared fixtures for tests/unit: a fake /proc tree built in tmp_path.

exe, cwd and ns/* must be real symlinks (the code calls readlink), which is
why the tree is generated per test instead of committed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HOST_NS = {
    "uts": 4026531838, "ipc": 4026531839, "mnt": 4026531841, "pid": 4026531836,
    "pid_for_children": 4026531836, "net": 4026531840, "time": 4026531834,
    "time_for_children": 4026531834, "cgroup": 4026531835, "user": 4026531837,
}


class FakeProc:
    """Writes /proc/<pid>/{stat,status,cmdline,loginuid,cgroup,exe,cwd,ns/*}."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> str:
        return str(self.root)

    def add(self, pid: int, *, ppid: int = 1, comm: bytes = b"proc",
            argv: list[bytes] | None = None, exe: bytes | None = b"/usr/bin/proc",
            cwd: bytes | None = b"/", uids=(1000, 1000, 1000, 1000), gids=(1000, 1000, 1000, 1000),
            cap_inh: int = 0, cap_prm: int = 0, cap_eff: int = 0, start_ticks: int = 100,
            ns: dict | None = None, loginuid: int | None = 1000,
            cgroup: str = "0::/user.slice/user-1000.slice/session-1.scope\n",
            write_status: bool = True) -> Path:
        d = self.root / str(pid)
        d.mkdir()
        rest = ["S", str(ppid)] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 30
        (d / "stat").write_bytes(b"%d (%s) " % (pid, comm) + " ".join(rest).encode() + b"\n")
        if write_status:
            (d / "status").write_text(
                f"Name:\tx\nState:\tS (sleeping)\nPPid:\t{ppid}\n"
                f"Uid:\t{uids[0]}\t{uids[1]}\t{uids[2]}\t{uids[3]}\n"
                f"Gid:\t{gids[0]}\t{gids[1]}\t{gids[2]}\t{gids[3]}\n"
                f"CapInh:\t{cap_inh:016x}\nCapPrm:\t{cap_prm:016x}\nCapEff:\t{cap_eff:016x}\n"
                f"CapBnd:\t000001ffffffffff\n"
            )
        if argv is None:
            argv = [exe or comm]
        (d / "cmdline").write_bytes(b"".join(a + b"\0" for a in argv))
        if loginuid is not None:
            (d / "loginuid").write_text(str(loginuid))
        (d / "cgroup").write_text(cgroup)
        if exe is not None:
            os.symlink(exe, os.fsencode(d / "exe"))
        if cwd is not None:
            os.symlink(cwd, os.fsencode(d / "cwd"))
        (d / "ns").mkdir()
        for kind, inum in (ns if ns is not None else HOST_NS).items():
            os.symlink(f"{kind.split('_')[0]}:[{inum}]", d / "ns" / kind)
        return d


@pytest.fixture
def fake_proc(tmp_path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def host_ns_inodes() -> dict:
    return dict(HOST_NS)


@pytest.fixture
def tmpfs_path():
    """A fresh directory on a tmpfs (/dev/shm): where readdir's d_ino is the
    inode stat() gives and every file has its directory's st_dev, as on the
    cgroup file system and /run/netns the code under test reads.  tmp_path
    may be on an overlay or 9p file system (the QEMU guests' /tmp), where
    neither holds."""
    import shutil
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="tetrahost-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
