"""Kernel records (csrc/events.h) -> tetrahost.events.records values.

The first byte of each record (th_header.op) picks the decoder.  A record that
is shorter than its type says, or has an unknown op, raises DecodeError: the
caller counts it and goes on; a bad record never stops the pipeline.
"""
from __future__ import annotations

import functools
import hashlib

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.layout import Layout
from tetrahost.events.records import Caps, Creds, ExecRecord, ExitRecord, ForkRecord, HookRecord


class DecodeError(ValueError):
    pass


_EXEC = Layout("struct th_exec", stop_at="data")
_FORK = Layout("struct th_fork")
_EXIT = Layout("struct th_exit")
_DATA_OFFSET = ffi.offsetof("struct th_exec", "data")

_E = _EXEC.index
_CREDS = _EXEC.slice("creds.")
_CAPS = _EXEC.slice("caps.")
_NS = _EXEC.slice("ns[")
_HOOK = Layout("struct th_hook_event", stop_at="data")
_HOOK_DATA = ffi.offsetof("struct th_hook_event", "data")
_RET_START = _HOOK_DATA + lib.TH_RET_SLOT * lib.TH_STR_SLOT
_IMA_DIGEST = ffi.offsetof("struct th_hook_event", "ima_digest")
# The kernel submits a hook record up to the end of its last used argument
# (or return) slot (submit_hook, csrc/bpf/lib/common.bpf.h), not whole.
_HOOK_RECORDS = "hook records cut after the last used slot"
_SLOT = lib.TH_STR_SLOT
_H = _HOOK.index
_H_NS = _HOOK.slice("ns[")
_H_LEN = _HOOK.slice("arg_len[")
_F = _FORK.index
_X = _EXIT.index


@functools.cache
def records_layout_id() -> str:
    """What this build's decoder expects of kernel records: their op codes and
    the fields, formats and offsets of each record type.  A pinned ring
    buffer written by another build is decoded only when its producer had
    the same id (pins.py keeps it in the manifest)."""
    h = hashlib.sha256()
    for layout in (_EXEC, _FORK, _EXIT, _HOOK):
        h.update(f"{layout.ctype}|{layout.struct.format}|{','.join(layout.fields)};".encode())
    h.update(f"{lib.TH_OP_EXEC},{lib.TH_OP_FORK},{lib.TH_OP_EXIT},{lib.TH_OP_HOOK},"
             f"{_DATA_OFFSET},{_HOOK_DATA},{_HOOK_RECORDS},{lib.TH_STR_SLOT},{lib.TH_RET_SLOT}".encode())
    return h.hexdigest()[:16]


def _exec(buf: bytes) -> ExecRecord:
    # One unpack, positional construction: this runs for every exec on the host.
    size = len(buf)
    if size < _DATA_OFFSET:
        raise DecodeError(f"exec record of {size} bytes, fixed part alone is {_DATA_OFFSET}")
    v = _EXEC_UNPACK(buf)
    end_path = _DATA_OFFSET + v[_E_PATH_LEN]
    end_args = end_path + v[_E_ARGS_LEN]
    end = end_args + v[_E_CWD_LEN]
    if end > size:
        raise DecodeError(f"exec record of {size} bytes announces {end} bytes of data")
    flags = v[_E_FLAGS]
    argv = buf[end_path:end_args].split(b"\0")
    if argv[-1] == b"":   # the terminating NUL of the last argument
        argv.pop()
    del argv[:1]          # argv[0]: Tetragon leaves it out
    return ExecRecord(
        v[_E_KTIME], v[_E_PID], v[_E_TID], v[_E_PPID], v[_E_AUID], v[_E_PARENT_KTIME], v[_E_CGROUP_ID],
        Creds(*v[_CREDS]), Caps(*v[_CAPS]), v[_NS],
        buf[_DATA_OFFSET:end_path], argv, buf[end_args:end],
        bool(flags & _TRUNC_PATH), bool(flags & _PATH_UNRES), bool(flags & _TRUNC_ARGS),
        bool(flags & _TRUNC_CWD), bool(flags & _ERR_ARGS), bool(flags & _NO_AUID),
    )


# Field positions and flag bits of the exec record, looked up once.
_EXEC_UNPACK = _EXEC.struct.unpack_from
(_E_KTIME, _E_PID, _E_TID, _E_PPID, _E_AUID, _E_PARENT_KTIME, _E_CGROUP_ID, _E_FLAGS, _E_PATH_LEN,
 _E_ARGS_LEN, _E_CWD_LEN) = (_E[k] for k in ("hdr.ktime", "pid", "tid", "ppid", "auid", "parent_ktime",
                                             "cgroup_id", "flags", "path_len", "args_len", "cwd_len"))
_TRUNC_PATH, _PATH_UNRES, _TRUNC_ARGS = lib.TH_EXEC_TRUNC_PATH, lib.TH_EXEC_PATH_UNRESOLVED, lib.TH_EXEC_TRUNC_ARGS
_TRUNC_CWD, _ERR_ARGS, _NO_AUID = lib.TH_EXEC_TRUNC_CWD, lib.TH_EXEC_ERR_ARGS, lib.TH_EXEC_NO_AUID


def _fork(buf: bytes) -> ForkRecord:
    if len(buf) < _FORK_SIZE:
        raise DecodeError(f"{_FORK.ctype} record of {len(buf)} bytes, expected {_FORK_SIZE}")
    v = _FORK_UNPACK(buf)
    return ForkRecord(v[_F_KTIME], v[_F_PID], v[_F_TID], v[_F_PPID], v[_F_PARENT_KTIME])


def _exit(buf: bytes) -> ExitRecord:
    if len(buf) < _EXIT_SIZE:
        raise DecodeError(f"{_EXIT.ctype} record of {len(buf)} bytes, expected {_EXIT_SIZE}")
    v = _EXIT_UNPACK(buf)
    return ExitRecord(v[_X_KTIME], v[_X_PID], v[_X_TID], v[_X_EXIT_CODE], v[_X_START_KTIME])


_FORK_UNPACK, _FORK_SIZE = _FORK.struct.unpack_from, _FORK.size
_F_KTIME, _F_PID, _F_TID, _F_PPID, _F_PARENT_KTIME = (
    _F[k] for k in ("hdr.ktime", "pid", "tid", "ppid", "parent_ktime"))
_EXIT_UNPACK, _EXIT_SIZE = _EXIT.struct.unpack_from, _EXIT.size
_X_KTIME, _X_PID, _X_TID, _X_EXIT_CODE, _X_START_KTIME = (
    _X[k] for k in ("hdr.ktime", "pid", "tid", "exit_code", "start_ktime"))


def _hook(buf: bytes) -> HookRecord:
    # The hot path of a flood of policy events: positional, few lookups.
    size = len(buf)
    if size < _HOOK_DATA:
        raise DecodeError(f"hook record of {size} bytes, its fixed part alone is {_HOOK_DATA}")
    v = _HOOK_UNPACK(buf)
    args = []
    end = start = _HOOK_DATA
    for n in v[_H_LEN]:
        if n:
            end = start + (n if n < _SLOT else _SLOT)
            args.append(buf[start:end])
        else:
            args.append(b"")
        start += _SLOT
    ret_len = v[_H_RET_LEN]
    if ret_len:
        end = _RET_START + (ret_len if ret_len < _SLOT else _SLOT)
    if size < end:
        raise DecodeError(f"hook record of {size} bytes, its arguments end at byte {end}")
    flags = v[_H_FLAGS]
    algo = v[_H_IMA_ALGO]
    return HookRecord(
        v[_H_KTIME], v[_H_PID], v[_H_TID], v[_H_HOOK_ID], v[_H_SELECTOR], v[_H_ACTION], v[_H_ACTION_ARG],
        v[_H_NS], args,
        bool(flags & _MONITOR), bool(flags & _SIGNAL_FAILED), bool(flags & _ARG_TRUNC),
        bool(flags & _PATH_UNRESOLVED),
        v[_H_RETVAL] if flags & _HAS_RETURN else None,
        buf[_RET_START:end] if ret_len else b"",
        bool(flags & _SOCK_OWNER), v[_H_SYSCALL_NR], bool(flags & _SET_FAILED), bool(flags & _COMPAT),
        v[_H_KSTACK], v[_H_USTACK], algo,
        buf[_IMA_DIGEST:_IMA_DIGEST + lib.TH_IMA_DIGEST_MAX] if algo >= 0 else b"")


# Field positions and flag bits of the hook record, looked up once.
_HOOK_UNPACK = _HOOK.struct.unpack_from
(_H_KTIME, _H_PID, _H_TID, _H_HOOK_ID, _H_SELECTOR, _H_ACTION, _H_ACTION_ARG, _H_FLAGS, _H_RETVAL,
 _H_RET_LEN, _H_SYSCALL_NR, _H_KSTACK, _H_USTACK, _H_IMA_ALGO) = (
    _H[k] for k in ("hdr.ktime", "pid", "tid", "hook_id", "selector", "action", "action_arg", "flags",
                    "retval", "ret_len", "syscall_nr", "kernel_stack_id", "user_stack_id", "ima_algo"))
_MONITOR, _SIGNAL_FAILED, _ARG_TRUNC = lib.TH_HOOK_MONITOR, lib.TH_HOOK_SIGNAL_FAILED, lib.TH_HOOK_ARG_TRUNC
_PATH_UNRESOLVED, _HAS_RETURN, _SOCK_OWNER = (lib.TH_HOOK_PATH_UNRESOLVED, lib.TH_HOOK_HAS_RETURN,
                                             lib.TH_HOOK_SOCK_OWNER)
_SET_FAILED, _COMPAT = lib.TH_HOOK_SET_FAILED, lib.TH_HOOK_COMPAT


DECODERS = {lib.TH_OP_EXEC: _exec, lib.TH_OP_FORK: _fork, lib.TH_OP_EXIT: _exit, lib.TH_OP_HOOK: _hook}


def decode(buf: bytes):
    if not buf:
        raise DecodeError("empty record")
    try:
        decoder = DECODERS[buf[0]]
    except KeyError:
        raise DecodeError(f"unknown record op {buf[0]}") from None
    return decoder(buf)
