"""Read running processes from a proc filesystem.

The process cache is seeded from this scan at start (entries flagged procFS),
so events about processes that started before the agent still carry their
process and parent.  The proc root is a parameter: tests point it at a fixture
tree built in a temporary directory.

Processes come and go while we read: any process whose directory disappears
mid-read is skipped (never an exception).  Fields that are merely unreadable
(exe/cwd of another user's process when not root) are left empty and noted on
the ProcInfo, because the process itself is still real.

Times: field 22 of /proc/<pid>/stat is the start time in clock ticks since
boot, counted on the same boot-time clock bpf_ktime_get_boot_ns() reads, so
ticks * (1e9 / SC_CLK_TCK) is comparable with the kernel records' ktime (at
tick resolution, 10 ms with USER_HZ=100).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from tetrahost.events.namespaces import read_ns_inodes
from tetrahost.events.records import Caps, Creds

INVALID_UID = 0xFFFFFFFF   # loginuid of a process no login session owns

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Errors meaning "this process is gone" (or never was): skip it, do not crash.
_GONE = (FileNotFoundError, ProcessLookupError, NotADirectoryError)


@dataclass(slots=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: bytes
    creds: Creds
    caps: Caps
    binary: bytes             # readlink exe; comm for kernel threads (as Tetragon)
    args: list[bytes]         # argv[1:]
    cwd: bytes
    start_ticks: int          # stat field 22
    start_ktime: int          # boot-time ns
    ns: tuple[int, ...]       # NAMESPACE_KINDS order, 0 when unreadable
    auid: int
    cgroup: str               # cgroup v2 path ("0::" line), "" when none
    kernel_thread: bool = False
    exe_error: bool = False   # exe link unreadable (permission) for a user process
    cwd_error: bool = False


@dataclass(slots=True)
class StatFields:
    comm: bytes
    state: str
    ppid: int
    start_ticks: int


def ticks_to_ns(ticks: int, clk_tck: int = _CLK_TCK) -> int:
    """Clock ticks since boot (stat field 22) to boot-time nanoseconds."""
    return ticks * 1_000_000_000 // clk_tck


def parse_stat(data: bytes) -> StatFields:
    """Parse /proc/<pid>/stat.

    comm (field 2) is in parentheses and may itself contain spaces and ')'
    (a process can name itself "a) b"), so the fields after it are found
    from the LAST ')' in the line, never by splitting the whole line.
    """
    open_paren = data.index(b"(")
    close_paren = data.rindex(b")")
    comm = data[open_paren + 1:close_paren]
    rest = data[close_paren + 2:].split()
    # rest[0] is field 3 (state), so field N is rest[N - 3].
    return StatFields(
        comm=comm,
        state=rest[0].decode("ascii", "replace"),
        ppid=int(rest[4 - 3]),
        start_ticks=int(rest[22 - 3]),
    )


def parse_status(data: bytes) -> tuple[Creds, Caps]:
    """Uid/Gid lines (real, effective, saved, fs) and the CapInh/CapPrm/CapEff hex masks."""
    uids = gids = (INVALID_UID,) * 4
    cap_inh = cap_prm = cap_eff = 0
    for line in data.split(b"\n"):
        key, _, value = line.partition(b":")
        if key == b"Uid":
            uids = tuple(int(v) for v in value.split()[:4])
        elif key == b"Gid":
            gids = tuple(int(v) for v in value.split()[:4])
        elif key == b"CapInh":
            cap_inh = int(value.strip(), 16)
        elif key == b"CapPrm":
            cap_prm = int(value.strip(), 16)
        elif key == b"CapEff":
            cap_eff = int(value.strip(), 16)
    creds = Creds(uid=uids[0], gid=gids[0], euid=uids[1], egid=gids[1],
                  suid=uids[2], sgid=gids[2], fsuid=uids[3], fsgid=gids[3])
    return creds, Caps(effective=cap_eff, permitted=cap_prm, inheritable=cap_inh)


def parse_cmdline(data: bytes) -> list[bytes]:
    """argv from /proc/<pid>/cmdline (NUL-separated, usually NUL-terminated)."""
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    return data.split(b"\0")


def parse_cgroup_v2(data: bytes) -> str:
    """The unified-hierarchy path from /proc/<pid>/cgroup (the "0::" line)."""
    for line in data.split(b"\n"):
        if line.startswith(b"0::"):
            # Kept as the OS spells it (surrogateescape) for workload parsing; the
            # exporters turn it into valid UTF-8 with tetrahost.events.text.os_text.
            return line[3:].decode("utf-8", "surrogateescape")
    return ""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _readlink_bytes(path: str) -> bytes:
    return os.readlink(os.fsencode(path))


def read_process(pid: int, proc_root: str = "/proc") -> ProcInfo | None:
    """Everything the cache needs about one process, or None if it vanished."""
    base = f"{proc_root}/{pid}"
    try:
        stat = parse_stat(_read(base + "/stat"))
        creds, caps = parse_status(_read(base + "/status"))
        argv = parse_cmdline(_read(base + "/cmdline"))
    except _GONE:
        return None
    except (ValueError, IndexError, PermissionError):
        # A malformed stat/status is not a process we can describe.
        return None

    # Kernel threads have no mm: empty cmdline and no exe link.
    kernel_thread = not argv
    exe_error = False
    try:
        binary = _readlink_bytes(base + "/exe")
    except _GONE:
        if not os.path.isdir(base):
            return None
        binary = b""
    except OSError:
        binary = b""
        exe_error = not kernel_thread
    if kernel_thread:
        binary = binary or stat.comm

    cwd_error = False
    try:
        cwd = _readlink_bytes(base + "/cwd")
    except _GONE:
        if not os.path.isdir(base):
            return None
        cwd, cwd_error = b"", True
    except OSError:
        cwd, cwd_error = b"", True

    try:
        auid = int(_read(base + "/loginuid").strip() or INVALID_UID)
    except (OSError, ValueError):
        auid = INVALID_UID
    try:
        cgroup = parse_cgroup_v2(_read(base + "/cgroup"))
    except OSError:
        cgroup = ""

    ns = read_ns_inodes(proc_root, pid)
    if not os.path.isdir(base):
        return None   # exited while we read: the values may be from a dying task
    return ProcInfo(
        pid=pid, ppid=stat.ppid, comm=stat.comm, creds=creds, caps=caps,
        binary=binary, args=argv[1:], cwd=cwd,
        start_ticks=stat.start_ticks, start_ktime=ticks_to_ns(stat.start_ticks),
        ns=ns, auid=auid, cgroup=cgroup, kernel_thread=kernel_thread,
        exe_error=exe_error, cwd_error=cwd_error,
    )


def list_pids(proc_root: str = "/proc") -> list[int]:
    """Numeric entries of the proc root (thread group leaders only: /proc lists no tids)."""
    pids = []
    with os.scandir(proc_root) as it:
        for entry in it:
            if entry.name.isdigit():
                pids.append(int(entry.name))
    pids.sort()
    return pids


def scan_processes(proc_root: str = "/proc") -> Iterator[ProcInfo]:
    """Every process that can be read, in pid order; vanished ones are skipped."""
    for pid in list_pids(proc_root):
        info = read_process(pid, proc_root)
        if info is not None:
            yield info
