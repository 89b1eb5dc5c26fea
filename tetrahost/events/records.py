"""Decoded kernel records: plain Python values, independent of cffi.

The decoder (tetrahost.events.decode) turns the C structs of csrc/events.h into
these; everything downstream (process cache, exporters) only sees these types.
Byte strings stay bytes until the exporter: paths and arguments on Linux are not
guaranteed to be UTF-8.
"""
from __future__ import annotations

from dataclasses import dataclass

# Order of namespace inodes in ExecRecord.ns (enum th_ns in csrc/events.h).
NAMESPACE_KINDS = (
    "uts", "ipc", "mnt", "pid", "pid_for_children",
    "net", "time", "time_for_children", "cgroup", "user",
)


@dataclass(slots=True)
class Creds:
    uid: int
    gid: int
    euid: int
    egid: int
    suid: int
    sgid: int
    fsuid: int
    fsgid: int


@dataclass(slots=True)
class Caps:
    effective: int
    permitted: int
    inheritable: int


@dataclass(slots=True)
class ExecRecord:
    ktime: int                # boot-time ns of the exec
    pid: int
    tid: int
    ppid: int
    auid: int
    parent_ktime: int         # boot-time ns the parent started
    cgroup_id: int
    creds: Creds
    caps: Caps
    ns: tuple[int, ...]       # 10 inode numbers, NAMESPACE_KINDS order
    binary: bytes             # resolved path of the executed file
    args: list[bytes]         # argv[1:] (argv[0] dropped, as Tetragon does)
    cwd: bytes
    truncated_path: bool = False   # longer than TH_PATH_MAX: binary holds its root end
    path_unresolved: bool = False  # deeper than TH_PATH_DEPTH: binary holds its leaf end only
    truncated_args: bool = False
    truncated_cwd: bool = False
    args_error: bool = False
    auid_unknown: bool = False


@dataclass(slots=True)
class ForkRecord:
    ktime: int
    pid: int
    tid: int
    ppid: int
    parent_ktime: int


@dataclass(slots=True)
class ExitRecord:
    ktime: int
    pid: int
    tid: int
    exit_code: int            # wait(2) status word
    start_ktime: int

    @property
    def status(self) -> int:
        return (self.exit_code >> 8) & 0xFF

    @property
    def signal(self) -> int:
        return self.exit_code & 0x7F


@dataclass(slots=True)
class HookRecord:
    """A policy hook fired and one of its selectors matched."""
    ktime: int
    pid: int
    tid: int
    hook_id: int              # the agent's id of the hook (tetrahost.runtime.manager)
    selector: int             # index of the matching selector
    action: int               # enum th_action
    action_arg: int           # signal sent / errno returned
    ns: tuple[int, ...]       # the task's namespaces when the hook fired
    args: list[bytes]         # raw argument bytes, per position in the hook's args
    monitor: bool = False     # policy-mode monitor: enforcement was not done
    signal_failed: bool = False
    truncated: bool = False
    path_unresolved: bool = False # a path argument's root was not reached: Prefix/Equal failed closed
    retval: int | None = None # return probes: the function's return value
    ret_raw: bytes = b""      # ... read as returnArg's type, when not an integer (sock)
    sock_owner: bool = False  # pid/tid are the tracked owner of the event's socket
    syscall_nr: int = -1      # syscall hooks: the syscall that fired (list hooks cover several)
    set_failed: bool = False  # USDT Set: the argument's memory could not be written
    compat: bool = False      # the task was in a 32-bit syscall: syscall_nr is an i386 number
    kernel_stack_id: int = -1 # kernelStackTrace: id in the hook's stack_traces map, < 0 none
    user_stack_id: int = -1   # userStackTrace: the same for the user stack
    ima_algo: int = -1        # imaHash: the kernel's enum hash_algo of ima_digest, < 0 none
    ima_digest: bytes = b""   # ... the digest (TH_IMA_DIGEST_MAX bytes; its algorithm says how many count)


Record = ExecRecord | ForkRecord | ExitRecord | HookRecord
