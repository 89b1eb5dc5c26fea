"""Policy model -> what the generic BPF program reads (csrc/events.h).

One hook compiles to one `struct th_hook_config` (as plain data,
tetrahost.policy.hookconfig; the sensor side packs it) plus the members of its
string sets (str_equal / str_prefix / str_postfix maps).  This module does
the hook (arguments, return probe) and hands each selector to
tetrahost.policy.compile_selectors.  Anything the kernel side cannot
evaluate yet raises CompileError naming the selector and field: a policy is
never loaded with a selector silently dropped, because a dropped matcher
would widen what the policy matches (or kills).

What compiling needs to know of the host comes in as arguments: the host's
namespace inodes (host_ns) and the tracepoint record layouts (fields, or a
tracepoint_fields lookup); nothing here reads the system.
"""
from __future__ import annotations

import zlib
from typing import Callable, Protocol, Sequence

from tetrahost import constants as abi
from tetrahost.policy.compile_selectors import ACTIONS, compile_return_args, compile_selector
from tetrahost.policy.compiled import (NO_ARG, SOCK_ARG_KINDS, CompiledHook, CompileError, KernelUnreadable,
                                       StringSets, locate)
from tetrahost.policy.hookconfig import HookConfig
from tetrahost.policy.model import Hook
from tetrahost.policy.vocab import SOCKET_ACTIONS, ArgKind

__all__ = ["CompileError", "CompiledHook", "KernelUnreadable", "arg_kind_for", "compile_hook"]


class HostNamespaceInodes(Protocol):
    """The host's namespaces (host_ns values, isNamespaceCapability):
    tetrahost.events.namespaces.HostNamespaces."""

    def inode(self, kind: str) -> int: ...


# (subsystem, event) -> the tracepoint's record fields, each with name, type,
# offset, size and data_loc / inline_array / pointer (tetrahost.tracefs.event_fields
# reads them); a LookupError when they cannot be read makes KernelUnreadable
TracepointFields = Callable[[str, str], Sequence]


_PATH_KINDS = {"file": abi.TH_ARG_FILE, "path": abi.TH_ARG_PATH, "dentry": abi.TH_ARG_DENTRY,
               "linux_binprm": abi.TH_ARG_BPRM, "fd": abi.TH_ARG_FD}
# network argument types -> enum th_arg_kind (sockaddr: see arg_kind_for)
_NET_KINDS = {"sock": abi.TH_ARG_SOCK, "socket": abi.TH_ARG_SOCKET, "sockaddr": abi.TH_ARG_SOCKADDR,
              "skb": abi.TH_ARG_SKB, "net_device": abi.TH_ARG_NETDEV}
# credentials: the slot holds a struct th_cred / th_user_ns
_CRED_KINDS = {"cred": abi.TH_ARG_CRED, "user_namespace": abi.TH_ARG_USER_NS}
# kernel objects (csrc/bpf/lib/kobj_args.bpf.h): a kiocb's file path, an
# iov_iter's first segment, the others a record of their own
OBJECT_KINDS = {"kiocb": abi.TH_ARG_KIOCB, "iov_iter": abi.TH_ARG_IOV_ITER, "bpf_attr": abi.TH_ARG_BPF_ATTR,
                "bpf_map": abi.TH_ARG_BPF_MAP, "perf_event": abi.TH_ARG_PERF_EVENT,
                "module": abi.TH_ARG_MODULE, "load_info": abi.TH_ARG_LOAD_INFO}
# 64-bit capability sets read through their kernel_cap_t pointer, matched as integers
CAP_SET_TYPES = frozenset({"kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"})
BUF_ARG_KINDS = frozenset({abi.TH_ARG_BUF_KERNEL, abi.TH_ARG_BUF_USER})


def arg_kind_for(hook: Hook, base_type: str, kind: ArgKind) -> int:
    # a syscall's or a user-space function's pointers are the caller's memory
    user_memory = hook.syscall or hook.kind in ("uprobe", "usdt")
    if kind is ArgKind.NOP:     # holds a place in the argument list, reads nothing
        return abi.TH_ARG_NONE
    if base_type in CAP_SET_TYPES:
        return abi.TH_ARG_CAP_SET
    if base_type == "syscall64":
        return abi.TH_ARG_SYSCALL64
    if kind is ArgKind.INTEGER:
        return abi.TH_ARG_INT
    if base_type == "char_buf":
        return abi.TH_ARG_BUF_USER if user_memory else abi.TH_ARG_BUF_KERNEL
    if base_type == "string":
        return abi.TH_ARG_STR_USER if user_memory else abi.TH_ARG_STR_KERNEL
    if base_type in _PATH_KINDS:
        return _PATH_KINDS[base_type]
    if base_type == "sockaddr" and hook.syscall:
        return abi.TH_ARG_SOCKADDR_USER      # connect(2)/bind(2)'s pointer into user memory
    if base_type in _NET_KINDS:
        return _NET_KINDS[base_type]
    if base_type in _CRED_KINDS:
        return _CRED_KINDS[base_type]
    if base_type in OBJECT_KINDS:     # (uprobes: refused by validate_uprobes)
        return OBJECT_KINDS[base_type]
    raise CompileError(f"argument type {base_type!r} is not read by the kernel side yet "
                       f"(supported: integers, string, char_buf, {', '.join(_PATH_KINDS)}, "
                       f"{', '.join(_NET_KINDS)}, {', '.join(_CRED_KINDS)}, {', '.join(OBJECT_KINDS)})")


def _buf_size_source(hook: Hook, arg, pos: int) -> int:
    """The function argument holding a char_buf's byte count (sizeArgIndex is 1-based)."""
    if arg.return_copy:
        return 0        # the count is the return value (copied at the return, not read here)
    src = arg.size_arg_position
    if src is None:
        raise CompileError(f"args[{pos}]: a char_buf argument needs sizeArgIndex")
    if src >= abi.TH_MAX_ARGS:
        raise CompileError(f"args[{pos}].sizeArgIndex {arg.size_arg_index}: only the first "
                           f"{abi.TH_MAX_ARGS} function arguments can be read")
    return src


def _compile_tracepoint_args(hook: Hook, cfg, out: CompiledHook, fields) -> None:
    """Tracepoint args index the event's fields; the kernel side reads them
    from the record at the offsets of its format file."""
    for pos, arg in enumerate(hook.args):
        if arg.index >= len(fields):
            raise CompileError(f"args[{pos}].index {arg.index}: {hook.name} has {len(fields)} fields "
                               f"({', '.join(f.name for f in fields)})")
        f = fields[arg.index]
        if arg.resolve:
            # the field is a pointer the resolve path starts from: read it whole
            kind = arg_kind_for(hook, arg.base_type, arg.kind)
            _compile_resolve(cfg, arg, pos)
        elif arg.base_type == "string" and (f.data_loc or f.inline_array):
            kind = abi.TH_ARG_STR_KERNEL
        elif arg.base_type == "string" and f.pointer:
            # the syscalls/* events record the user's pointers
            kind = abi.TH_ARG_STR_USER if hook.subsystem == "syscalls" else abi.TH_ARG_STR_KERNEL
        else:
            kind = arg_kind_for(hook, arg.base_type, arg.kind)
        if kind in BUF_ARG_KINDS:
            raise CompileError(f"args[{pos}]: char_buf arguments of tracepoints are not supported yet "
                               "(use a string field, or a kprobe/raw tracepoint)")
        if arg.resolve and f.size != 8:
            raise CompileError(f"args[{pos}].resolve: field {f.name} ({f.type}) is not a pointer")
        if arg.resolve:
            cfg.arg_field[pos] = 8
        elif f.data_loc:
            cfg.arg_field[pos] = abi.TH_FIELD_DATALOC
        elif f.inline_array:
            cfg.arg_field[pos] = abi.TH_FIELD_INLINE
        elif f.size in (1, 2, 4, 8):
            cfg.arg_field[pos] = f.size
        else:
            raise CompileError(f"args[{pos}]: field {f.name} ({f.type}, {f.size} bytes) cannot be read as {arg.type}")
        cfg.arg_offset[pos] = f.offset
        cfg.arg_kind[pos] = kind
        cfg.arg_src[pos] = pos
        out.arg_kinds.append(kind)


def compile_hook(hook: Hook, hook_id: int, host_ns: HostNamespaceInodes, monitor: bool = False,
                 fields: Sequence | None = None, tracepoint_fields: TracepointFields | None = None) -> CompiledHook:
    """fields: a (non-raw) tracepoint's record layout; when None, asked of
    tracepoint_fields (a tracepoint hook with neither is KernelUnreadable).
    The sys_enter fallback's syscall set, the dispatcher slot and the flags
    that depend on the program are the attach plan's: added when the sensor
    packs the config (tetrahost.sensors.hook_config), never written here."""
    try:
        return _compile(hook, hook_id, host_ns, monitor, fields, tracepoint_fields)
    except CompileError as exc:
        exc.error = locate(hook, exc)
        raise


def _compile(hook: Hook, hook_id: int, host_ns: HostNamespaceInodes, monitor: bool,
             fields: Sequence | None, tracepoint_fields: TracepointFields | None) -> CompiledHook:
    cfg = HookConfig()
    out = CompiledHook(hook, cfg)
    cfg.hook_id = hook_id
    cfg.monitor = int(monitor)
    cfg.exec_target_arg = NO_ARG
    cfg.ret_copy_arg = NO_ARG
    if hook.enforcer:
        cfg.enforcer_id = enforcer_id(hook.enforcer)
    if hook.kind == "enforcer":
        # no selectors: it acts on the notes its policy's hooks take
        cfg.flags |= abi.TH_CFG_ENFORCER
        return out
    if len(hook.args) > abi.TH_MAX_ARGS:
        raise CompileError(f"{len(hook.args)} arguments; the kernel side reads at most {abi.TH_MAX_ARGS}")
    if hook.return_:
        _compile_return(hook, cfg)
    if hook.kind == "tracepoint" and not hook.raw:
        if fields is None:
            if tracepoint_fields is None:
                raise KernelUnreadable(f"{hook.name}: the tracepoint's format was not given (read from tracefs)")
            try:
                fields = tracepoint_fields(hook.subsystem, hook.event)
            except LookupError as exc:       # tetrahost.tracefs.TracepointError: not the policy's fault
                raise KernelUnreadable(str(exc)) from None
        _compile_tracepoint_args(hook, cfg, out, fields)
    else:
        _compile_function_args(hook, cfg, out)
    if not hook.selectors:
        # Tetragon: no selectors = every call is posted.  An empty selector
        # matches everything, so that is one selector whose action is Post.
        cfg.selectors[0].action = abi.TH_ACTION_POST
        cfg.nselectors = 1
        return out
    if len(hook.selectors) > abi.TH_MAX_SELECTORS:
        raise CompileError(f"{len(hook.selectors)} selectors; at most {abi.TH_MAX_SELECTORS}")
    sets = StringSets(out)
    for i, sel in enumerate(hook.selectors):
        compile_selector(hook, sel, i, cfg.selectors[i], sets, host_ns)
        compile_return_args(hook, sel, cfg.ret_match[i], f"selectors[{i}]")
        if sel.match_binaries:
            cfg.flags |= abi.TH_CFG_NEEDS_BINARY
        compiled = cfg.selectors[i]
        if compiled.nns or compiled.nsch_mask or compiled.caps_userns:
            cfg.flags |= abi.TH_CFG_NEEDS_NS
    cfg.nselectors = len(hook.selectors)
    return out


def enforcer_id(policy_name: str) -> int:
    """The id NotifyEnforcer notes and the policy's enforcer share: derived
    from the policy's name (unique among loaded policies), so a restarted
    agent compiles the same config for the same policy."""
    return zlib.crc32(policy_name.encode()) or 1


def _compile_function_args(hook: Hook, cfg, out: CompiledHook) -> None:
    """Kprobe, LSM and raw tracepoint args: registers, read by arg_kind."""
    for pos, arg in enumerate(hook.args):
        if arg.index >= abi.TH_MAX_ARGS:
            raise CompileError(f"args[{pos}].index {arg.index}: only the first {abi.TH_MAX_ARGS} "
                               "function arguments can be read")
        kind = arg_kind_for(hook, arg.base_type, arg.kind)
        cfg.arg_kind[pos] = kind
        cfg.arg_src[pos] = arg.index
        if arg.resolve:
            _compile_resolve(cfg, arg, pos)
        if kind in BUF_ARG_KINDS:
            cfg.arg_offset[pos] = _buf_size_source(hook, arg, pos)
        if arg.return_copy:
            _compile_return_copy(hook, cfg, arg, pos)
        out.arg_kinds.append(kind)
        if kind == abi.TH_ARG_BPRM and hook.is_exec_hook:
            cfg.exec_target_arg = pos


def _compile_return(hook: Hook, cfg) -> None:
    """`return: true`: the entry parks a matching event, the return program
    adds the return value (read as returnArg's type) and posts it."""
    cfg.flags |= abi.TH_CFG_RETURN
    ret = hook.return_arg
    cfg.ret_size, cfg.ret_signed = 8, 1      # no type given, or a pointer: the raw register
    if ret is not None and ret.base_type in ("sock", "socket"):
        cfg.ret_kind = arg_kind_for(hook, ret.base_type, ret.kind)     # read into TH_RET_SLOT
    elif ret is not None and ret.kind is ArgKind.INTEGER:
        cfg.ret_size, cfg.ret_signed = ret.bits // 8, ret.signed
    elif ret is not None and ret.kind is not ArgKind.NOP:
        raise CompileError(f"returnArg.type {ret.type}: the kernel side reads integer, sock and "
                           "socket return values")
    if hook.return_arg_action in SOCKET_ACTIONS:
        if cfg.ret_kind not in SOCK_ARG_KINDS:
            raise CompileError(f"returnArgAction {hook.return_arg_action} needs a returnArg of type "
                               "sock or socket")
        cfg.ret_action = ACTIONS[hook.return_arg_action]


def _compile_return_copy(hook: Hook, cfg, arg, pos: int) -> None:
    """returnCopy: the buffer is read when the function returns, as many bytes
    as it returned (read(2), recvmsg...), not at the entry."""
    if arg.base_type != "char_buf":
        raise CompileError(f"args[{pos}].returnCopy: only char_buf arguments are copied at the return")
    if not hook.return_:
        raise CompileError(f"args[{pos}].returnCopy needs a return probe (return: true)")
    if cfg.ret_copy_arg != NO_ARG:
        raise CompileError(f"args[{pos}].returnCopy: the kernel side copies one buffer per hook at the return")
    for i, sel in enumerate(hook.selectors):
        if any(ma.arg_position == pos for ma in sel.match_args):
            raise CompileError(f"selectors[{i}].matchArgs: args[{pos}] is filled by the call (returnCopy): "
                               "its bytes are not known when the selectors are evaluated")
    cfg.ret_copy_arg = pos


def _compile_resolve(cfg, arg, pos: int) -> None:
    """`resolve:`: the walk done over the kernel's BTF when the policy was
    loaded (policy/resolve.py), as the pointer loads of th_resolve."""
    path = arg.resolved
    if path is None:
        raise KernelUnreadable(f"args[{pos}].resolve: {arg.resolve_unavailable or 'not resolved'}")
    if len(path.loads) > abi.TH_MAX_RESOLVE_STEPS:
        raise CompileError(f"args[{pos}].resolve: {len(path.loads)} pointers to follow, the kernel side "
                           f"follows at most {abi.TH_MAX_RESOLVE_STEPS}")
    r = cfg.resolve[pos]
    r.active = 1
    r.nloads = len(path.loads)
    for k, offset in enumerate(path.loads):
        r.loads[k] = offset
    r.last_offset = path.last_offset
    r.last_size = path.last_size
    r.last_signed = path.last_signed
