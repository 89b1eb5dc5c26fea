"""Policy model -> what the generic BPF program reads (csrc/events.h).

One hook compiles to one `struct th_hook_config` plus the members of its
string sets (str_equal / str_prefix maps).  Anything the kernel side cannot
evaluate yet raises CompileError naming the selector and field: a policy is
never loaded with a selector silently dropped, because a dropped matcher
would widen what the policy matches (or kills).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy.model import Hook, MatchArg, PathValue, PortRange, Selector
from tetrahost.policy.vocab import HOST_NS, NAMESPACE_KINDS, ArgKind

NO_ARG = 0xFF
STR_MAX = lib.TH_STR_MAX

_PATH_KINDS = {"file": lib.TH_ARG_FILE, "path": lib.TH_ARG_PATH, "dentry": lib.TH_ARG_DENTRY,
               "linux_binprm": lib.TH_ARG_BPRM, "fd": lib.TH_ARG_FD}
_INT_OPS = {"Equal": (lib.TH_MATCH_EQUAL, 0), "NotEqual": (lib.TH_MATCH_EQUAL, 1),
            "GreaterThan": (lib.TH_MATCH_GT, 0), "LessThan": (lib.TH_MATCH_LT, 0),
            "Mask": (lib.TH_MATCH_MASK, 0)}
_STR_OPS = {"Equal": (lib.TH_MATCH_EQUAL, 0), "NotEqual": (lib.TH_MATCH_EQUAL, 1),
            "Prefix": (lib.TH_MATCH_PREFIX, 0), "NotPrefix": (lib.TH_MATCH_PREFIX, 1),
            "Postfix": (lib.TH_MATCH_POSTFIX, 0), "NotPostfix": (lib.TH_MATCH_POSTFIX, 1)}
_BIN_OPS = {"In": (lib.TH_MATCH_EQUAL, 0), "NotIn": (lib.TH_MATCH_EQUAL, 1),
            "Prefix": (lib.TH_MATCH_PREFIX, 0), "NotPrefix": (lib.TH_MATCH_PREFIX, 1),
            "Postfix": (lib.TH_MATCH_POSTFIX, 0), "NotPostfix": (lib.TH_MATCH_POSTFIX, 1)}
# network argument types -> enum th_arg_kind (sockaddr: see arg_kind_for)
_NET_KINDS = {"sock": lib.TH_ARG_SOCK, "socket": lib.TH_ARG_SOCKET, "sockaddr": lib.TH_ARG_SOCKADDR,
              "skb": lib.TH_ARG_SKB, "net_device": lib.TH_ARG_NETDEV}
NET_ARG_KINDS = frozenset({*_NET_KINDS.values(), lib.TH_ARG_SOCKADDR_USER})
# credentials: the slot holds a struct th_cred / th_user_ns
_CRED_KINDS = {"cred": lib.TH_ARG_CRED, "user_namespace": lib.TH_ARG_USER_NS}
# 64-bit capability sets read through their kernel_cap_t pointer, matched as integers
CAP_SET_TYPES = frozenset({"kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"})
BUF_ARG_KINDS = frozenset({lib.TH_ARG_BUF_KERNEL, lib.TH_ARG_BUF_USER})
# network operators -> (enum th_match_op, negate)
_NET_OPS = {
    "SAddr": (lib.TH_MATCH_SADDR, 0), "NotSAddr": (lib.TH_MATCH_SADDR, 1),
    "DAddr": (lib.TH_MATCH_DADDR, 0), "NotDAddr": (lib.TH_MATCH_DADDR, 1),
    "SPort": (lib.TH_MATCH_SPORT, 0), "NotSPort": (lib.TH_MATCH_SPORT, 1),
    "DPort": (lib.TH_MATCH_DPORT, 0), "NotDPort": (lib.TH_MATCH_DPORT, 1),
    "SPortPriv": (lib.TH_MATCH_SPORT_PRIV, 0), "NotSPortPriv": (lib.TH_MATCH_SPORT_PRIV, 1),
    "DPortPriv": (lib.TH_MATCH_DPORT_PRIV, 0), "NotDPortPriv": (lib.TH_MATCH_DPORT_PRIV, 1),
    "Protocol": (lib.TH_MATCH_PROTOCOL, 0), "Family": (lib.TH_MATCH_FAMILY, 0),
    "State": (lib.TH_MATCH_STATE, 0),
}
_RATE_SCOPES = {"thread": lib.TH_RATE_THREAD, "process": lib.TH_RATE_PROCESS, "global": lib.TH_RATE_GLOBAL}
_CAP_SETS = {"Effective": 1, "Permitted": 2, "Inheritable": 3}
_ACTIONS = {"Post": lib.TH_ACTION_POST, "NoPost": lib.TH_ACTION_NOPOST, "Sigkill": lib.TH_ACTION_SIGKILL,
            "Signal": lib.TH_ACTION_SIGNAL, "Override": lib.TH_ACTION_OVERRIDE,
            "TrackSock": lib.TH_ACTION_TRACK_SOCK, "UntrackSock": lib.TH_ACTION_UNTRACK_SOCK}
_SOCK_KINDS = (lib.TH_ARG_SOCK, lib.TH_ARG_SOCKET)
# policy namespace names -> enum th_ns (NAMESPACE_KINDS order is the kernel's order)
_NS_INDEX = {name: i for i, name in enumerate(NAMESPACE_KINDS)}
_NS_RECORD_KIND = ("uts", "ipc", "mnt", "pid", "pid_for_children", "net", "time",
                   "time_for_children", "cgroup", "user")


class CompileError(ValueError):
    pass


@dataclass
class CompiledHook:
    hook: Hook
    config: object                      # cdata "struct th_hook_config *"
    str_equal: list[tuple[int, bytes]] = field(default_factory=list)   # (set_id, value)
    str_prefix: list[tuple[int, bytes]] = field(default_factory=list)
    str_postfix: list[tuple[int, bytes]] = field(default_factory=list)  # as written, reversed when loaded
    arg_kinds: list[int] = field(default_factory=list)                 # per hook arg, enum th_arg_kind
    # matchBinaries followChildren: (selector index, executable paths).  The
    # policy manager gives each a bit of the process sensor's follow_bins and
    # sets selectors[i].bin_follow (compiling has no side effects).
    follow: list[tuple[int, tuple[bytes, ...]]] = field(default_factory=list)
    # a selector needs the process sensor's per-process state (proc_state)
    needs_proc_state: bool = False

    def _actions(self) -> set[int]:
        return {self.config.selectors[i].action for i in range(self.config.nselectors)}

    @property
    def uses_enforcement(self) -> bool:
        return bool(self._actions() & {lib.TH_ACTION_SIGKILL, lib.TH_ACTION_SIGNAL, lib.TH_ACTION_OVERRIDE})

    @property
    def uses_override(self) -> bool:
        return lib.TH_ACTION_OVERRIDE in self._actions()


class _Cidrs:
    """The hook's address prefixes (th_hook_config.cidrs), shared by every
    SAddr/DAddr matcher of the hook; a prefix used twice is stored once."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.index: dict[tuple[int, bytes, int], int] = {}

    def add(self, net, where: str) -> int:
        net = ipaddress.ip_network(net, strict=False)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        key = (family, net.network_address.packed, net.prefixlen)
        if key in self.index:
            return self.index[key]
        i = len(self.index)
        if i >= lib.TH_MAX_CIDRS:
            raise CompileError(f"{where}: more than {lib.TH_MAX_CIDRS} different address prefixes "
                               "in one hook, the most the kernel side holds")
        c = self.cfg.cidrs[i]
        c.family = family
        c.prefixlen = net.prefixlen
        ffi.memmove(c.addr, net.network_address.packed, len(net.network_address.packed))
        ffi.memmove(c.mask, net.netmask.packed, len(net.netmask.packed))
        self.index[key] = i
        self.cfg.ncidrs = i + 1
        return i


def port_range_value(r: PortRange) -> int:
    """A SPort/DPort value as the kernel side reads it: low | high << 16."""
    return r.low | r.high << 16


class _Sets:
    def __init__(self, out: CompiledHook):
        self.out = out
        self.next_id = 1
        self.cidrs = _Cidrs(out.config)

    def add(self, op: int, values: list[bytes], where: str) -> int:
        set_id, self.next_id = self.next_id, self.next_id + 1
        target = {lib.TH_MATCH_PREFIX: self.out.str_prefix,
                  lib.TH_MATCH_POSTFIX: self.out.str_postfix}.get(op, self.out.str_equal)
        for v in values:
            if len(v) > STR_MAX:
                raise CompileError(f"{where}: value {v[:40]!r}... is longer than {STR_MAX} bytes, "
                                   "the longest string matched in the kernel")
            target.append((set_id, v))
        return set_id


def arg_kind_for(hook: Hook, base_type: str, kind: ArgKind) -> int:
    if kind is ArgKind.NOP:     # holds a place in the argument list, reads nothing
        return lib.TH_ARG_NONE
    if base_type in CAP_SET_TYPES:
        return lib.TH_ARG_CAP_SET
    if kind is ArgKind.INTEGER:
        return lib.TH_ARG_INT
    if base_type == "char_buf":
        # the same rule as strings: a syscall's buffer is the caller's memory
        return lib.TH_ARG_BUF_USER if hook.syscall else lib.TH_ARG_BUF_KERNEL
    if base_type == "string":
        # syscall arguments point into user memory, kernel functions' into kernel memory
        return lib.TH_ARG_STR_USER if hook.syscall else lib.TH_ARG_STR_KERNEL
    if base_type in _PATH_KINDS:
        return _PATH_KINDS[base_type]
    if base_type == "sockaddr" and hook.syscall:
        return lib.TH_ARG_SOCKADDR_USER      # connect(2)/bind(2)'s pointer into user memory
    if base_type in _NET_KINDS:
        return _NET_KINDS[base_type]
    if base_type in _CRED_KINDS:
        return _CRED_KINDS[base_type]
    raise CompileError(f"argument type {base_type!r} is not read by the kernel side yet "
                       f"(supported: integers, string, char_buf, {', '.join(_PATH_KINDS)}, "
                       f"{', '.join(_NET_KINDS)}, {', '.join(_CRED_KINDS)})")


def _buf_size_source(hook: Hook, arg, pos: int) -> int:
    """The function argument holding a char_buf's byte count (sizeArgIndex is 1-based)."""
    if arg.return_copy:
        return 0        # the count is the return value (copied at the return, not read here)
    src = arg.size_arg_position
    if src is None:
        raise CompileError(f"args[{pos}]: a char_buf argument needs sizeArgIndex")
    if src >= lib.TH_MAX_ARGS:
        raise CompileError(f"args[{pos}].sizeArgIndex {arg.size_arg_index}: only the first "
                           f"{lib.TH_MAX_ARGS} function arguments can be read")
    return src


def _compile_tracepoint_args(hook: Hook, cfg, out: CompiledHook, fields) -> None:
    """Tracepoint args index the event's fields; the kernel side reads them
    from the record at the offsets of its format file."""
    if fields is None:
        from tetrahost.sensors.tracepoints import TracepointError, event_fields
        try:
            fields = event_fields(hook.subsystem, hook.event)
        except TracepointError as exc:
            raise CompileError(str(exc)) from None
    for pos, arg in enumerate(hook.args):
        if arg.index >= len(fields):
            raise CompileError(f"args[{pos}].index {arg.index}: {hook.name} has {len(fields)} fields "
                               f"({', '.join(f.name for f in fields)})")
        f = fields[arg.index]
        if arg.kind is ArgKind.NOP:
            kind = lib.TH_ARG_NONE
        elif arg.base_type == "string" and (f.data_loc or f.inline_array):
            kind = lib.TH_ARG_STR_KERNEL
        elif arg.base_type == "string" and f.pointer:
            # the syscalls/* events record the user's pointers
            kind = lib.TH_ARG_STR_USER if hook.subsystem == "syscalls" else lib.TH_ARG_STR_KERNEL
        else:
            kind = arg_kind_for(hook, arg.base_type, arg.kind)
        if kind in BUF_ARG_KINDS:
            raise CompileError(f"args[{pos}]: char_buf arguments of tracepoints are not supported yet "
                               "(use a string field, or a kprobe/raw tracepoint)")
        if f.data_loc:
            cfg.arg_field[pos] = lib.TH_FIELD_DATALOC
        elif f.inline_array:
            cfg.arg_field[pos] = lib.TH_FIELD_INLINE
        elif f.size in (1, 2, 4, 8):
            cfg.arg_field[pos] = f.size
        else:
            raise CompileError(f"args[{pos}]: field {f.name} ({f.type}, {f.size} bytes) cannot be read as {arg.type}")
        cfg.arg_offset[pos] = f.offset
        cfg.arg_kind[pos] = kind
        cfg.arg_src[pos] = pos
        out.arg_kinds.append(kind)


def _value_bytes(v) -> bytes:
    if isinstance(v, PathValue):
        return v.canonical.encode()
    return str(v).encode()


def compile_hook(hook: Hook, hook_id: int, host_ns: HostNamespaces, monitor: bool = False,
                 syscall_nr: int = -1, fields=None) -> CompiledHook:
    """fields: a (non-raw) tracepoint's record layout (tetrahost.sensors.tracepoints),
    read from tracefs when None."""
    cfg = ffi.new("struct th_hook_config *")
    out = CompiledHook(hook, cfg)
    cfg.hook_id = hook_id
    cfg.monitor = monitor
    cfg.syscall_nr = syscall_nr
    cfg.exec_target_arg = NO_ARG
    cfg.ret_copy_arg = NO_ARG
    if len(hook.args) > lib.TH_MAX_ARGS:
        raise CompileError(f"{len(hook.args)} arguments; the kernel side reads at most {lib.TH_MAX_ARGS}")
    if hook.return_:
        _compile_return(hook, cfg)
    if hook.kind == "tracepoint" and not hook.raw:
        _compile_tracepoint_args(hook, cfg, out, fields)
    for pos, arg in enumerate(hook.args):
        if hook.kind == "tracepoint" and not hook.raw:
            break
        if arg.index >= lib.TH_MAX_ARGS:
            raise CompileError(f"args[{pos}].index {arg.index}: only the first {lib.TH_MAX_ARGS} "
                               "function arguments can be read")
        kind = arg_kind_for(hook, arg.base_type, arg.kind)
        cfg.arg_kind[pos] = kind
        cfg.arg_src[pos] = arg.index
        if kind in BUF_ARG_KINDS:
            cfg.arg_offset[pos] = _buf_size_source(hook, arg, pos)
        if arg.return_copy:
            _compile_return_copy(hook, cfg, arg, pos)
        out.arg_kinds.append(kind)
        if kind == lib.TH_ARG_BPRM and hook.is_exec_hook:
            cfg.exec_target_arg = pos
    if hook.syscall and hook.name.startswith("__x64_sys_"):
        cfg.flags |= lib.TH_CFG_SYSCALL_WRAPPER
    if not hook.selectors:
        # Tetragon: no selectors = every call is posted.  An empty selector
        # matches everything, so that is one selector whose action is Post.
        cfg.selectors[0].action = lib.TH_ACTION_POST
        cfg.nselectors = 1
        return out
    if len(hook.selectors) > lib.TH_MAX_SELECTORS:
        raise CompileError(f"{len(hook.selectors)} selectors; at most {lib.TH_MAX_SELECTORS}")
    sets = _Sets(out)
    for i, sel in enumerate(hook.selectors):
        _compile_selector(hook, sel, cfg.selectors[i], sets, host_ns, f"selectors[{i}]")
        _compile_return_args(hook, sel, cfg.ret_match[i], f"selectors[{i}]")
        if sel.match_binaries:
            cfg.flags |= lib.TH_CFG_NEEDS_BINARY
            if sel.match_binaries[0].follow_children:
                out.follow.append((i, tuple(_value_bytes(v) for v in sel.match_binaries[0].values)))
        if sel.match_capability_changes or sel.match_namespace_changes or out.follow:
            out.needs_proc_state = True
    cfg.nselectors = len(hook.selectors)
    return out


def _compile_selector(hook: Hook, sel: Selector, c, sets: _Sets, host_ns: HostNamespaces, where: str):
    for name in ("match_return_actions",):
        if getattr(sel, name):
            raise CompileError(f"{where}: {_yaml_name(name)} is not supported by the kernel side yet")
    _compile_args(hook, sel.match_args, c, sets, where)
    _compile_binaries(sel, c, sets, where)
    _compile_pids(sel, c, where)
    _compile_namespaces(sel, c, host_ns, where)
    _compile_caps(sel, c, host_ns, where)
    _compile_cap_changes(sel, c, host_ns, where)
    _compile_ns_changes(sel, c, where)
    _compile_action(hook, sel, c, sets.out.arg_kinds, where)


def _compile_return(hook: Hook, cfg) -> None:
    """`return: true`: the entry parks a matching event, the return program
    adds the return value (read as returnArg's type) and posts it."""
    cfg.flags |= lib.TH_CFG_RETURN
    ret = hook.return_arg
    cfg.ret_size, cfg.ret_signed = 8, 1      # no type given, or a pointer: the raw register
    if ret is not None and ret.base_type in ("sock", "socket"):
        cfg.ret_kind = arg_kind_for(hook, ret.base_type, ret.kind)     # read into TH_RET_SLOT
    elif ret is not None and ret.kind is ArgKind.INTEGER:
        cfg.ret_size, cfg.ret_signed = ret.bits // 8, ret.signed
    elif ret is not None and ret.kind is not ArgKind.NOP:
        raise CompileError(f"returnArg.type {ret.type}: the kernel side reads integer, sock and "
                           "socket return values")
    if hook.return_arg_action in ("TrackSock", "UntrackSock"):
        if cfg.ret_kind not in _SOCK_KINDS:
            raise CompileError(f"returnArgAction {hook.return_arg_action} needs a returnArg of type "
                               "sock or socket")
        cfg.ret_action = _ACTIONS[hook.return_arg_action]


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


def _compile_return_args(hook: Hook, sel: Selector, m, where: str) -> None:
    """matchReturnArgs: one integer matcher per selector, on the return value."""
    if not sel.match_return_args:
        return
    here = f"{where}.matchReturnArgs"
    if not hook.return_:
        raise CompileError(f"{here}: the hook has no return probe (return: true)")
    if len(sel.match_return_args) > 1:
        raise CompileError(f"{here}: {len(sel.match_return_args)} entries; the kernel side checks one "
                           "per selector")
    ma = sel.match_return_args[0]
    if ma.arg_kind is not ArgKind.INTEGER or ma.operator not in _INT_OPS:
        raise CompileError(f"{here}[0]: only integer return values with {', '.join(_INT_OPS)} are "
                           "checked by the kernel side")
    if len(ma.parsed) > lib.TH_MAX_INT_VALUES:
        raise CompileError(f"{here}[0].values: {len(ma.parsed)} values; at most {lib.TH_MAX_INT_VALUES}")
    m.op, m.negate = _INT_OPS[ma.operator]
    for j, v in enumerate(ma.parsed):
        m.values[j] = int(v)
    m.nvalues = len(ma.parsed)


def _compile_args(hook: Hook, match_args: tuple[MatchArg, ...], c, sets: _Sets, where: str):
    if len(match_args) > lib.TH_MAX_MATCH_ARGS:
        raise CompileError(f"{where}.matchArgs: {len(match_args)} entries; at most {lib.TH_MAX_MATCH_ARGS}")
    for k, ma in enumerate(match_args):
        here = f"{where}.matchArgs[{k}]"
        m = c.args[k]
        m.arg = ma.arg_position
        if ma.arg_kind is ArgKind.INTEGER:
            if ma.operator not in _INT_OPS:
                raise CompileError(f"{here}.operator {ma.operator} on an integer is not supported")
            m.op, m.negate = _INT_OPS[ma.operator]
            if len(ma.parsed) > lib.TH_MAX_INT_VALUES:
                raise CompileError(f"{here}.values: {len(ma.parsed)} values; at most {lib.TH_MAX_INT_VALUES}")
            for j, v in enumerate(ma.parsed):
                m.values[j] = int(v)
            m.nvalues = len(ma.parsed)
        elif ma.arg_kind in (ArgKind.STRING, ArgKind.PATH):
            if ma.operator not in _STR_OPS:
                raise CompileError(f"{here}.operator {ma.operator} is not evaluated in the kernel yet "
                                   f"(supported on strings and paths: {', '.join(_STR_OPS)})")
            m.op, m.negate = _STR_OPS[ma.operator]
            m.set_id = sets.add(m.op, [_value_bytes(v) for v in ma.parsed], here)
        elif ma.arg_kind is ArgKind.NETWORK:
            _compile_net_matcher(ma, m, sets.cidrs, here)
        else:
            raise CompileError(f"{here}: filtering {ma.arg_base_type} arguments is not supported yet")
    c.nargs = len(match_args)


def _compile_net_matcher(ma: MatchArg, m, cidrs: _Cidrs, here: str):
    """SAddr/DPort/Protocol... on a sock, socket, sockaddr or skb argument."""
    if ma.operator not in _NET_OPS:
        raise CompileError(f"{here}.operator {ma.operator} on a {ma.arg_base_type} argument is not "
                           f"supported (supported: {', '.join(_NET_OPS)})")
    m.op, m.negate = _NET_OPS[ma.operator]
    if len(ma.parsed) > lib.TH_MAX_INT_VALUES:
        raise CompileError(f"{here}.values: {len(ma.parsed)} values; the kernel side matches at most "
                           f"{lib.TH_MAX_INT_VALUES} per matchArgs entry (split them over two selectors)")
    for j, v in enumerate(ma.parsed):
        if m.op in (lib.TH_MATCH_SADDR, lib.TH_MATCH_DADDR):
            m.values[j] = cidrs.add(v, here)
        elif m.op in (lib.TH_MATCH_SPORT, lib.TH_MATCH_DPORT):
            m.values[j] = port_range_value(v)
        else:
            m.values[j] = int(v)
    m.nvalues = len(ma.parsed)


def _compile_binaries(sel: Selector, c, sets: _Sets, where: str):
    if not sel.match_binaries:
        return
    if len(sel.match_binaries) > 1:
        raise CompileError(f"{where}.matchBinaries: only one entry per selector is supported")
    mb = sel.match_binaries[0]
    here = f"{where}.matchBinaries[0]"
    if mb.operator not in _BIN_OPS:
        raise CompileError(f"{here}.operator {mb.operator} is not evaluated in the kernel yet "
                           f"(supported: {', '.join(_BIN_OPS)})")
    if mb.follow_children and mb.operator not in ("In", "NotIn"):
        raise CompileError(f"{here}.followChildren works with In and NotIn, not {mb.operator}")
    c.bin_op, c.bin_negate = _BIN_OPS[mb.operator]
    c.bin_set_id = sets.add(c.bin_op, [_value_bytes(v) for v in mb.values], here)


def _compile_pids(sel: Selector, c, where: str):
    """Each entry: In/NotIn over up to TH_MAX_PID_VALUES pids; entries are ANDed."""
    if len(sel.match_pids) > lib.TH_MAX_PID_MATCH:
        raise CompileError(f"{where}.matchPIDs: {len(sel.match_pids)} entries; the kernel side "
                           f"evaluates at most {lib.TH_MAX_PID_MATCH} per selector")
    for k, mp in enumerate(sel.match_pids):
        if len(mp.values) > lib.TH_MAX_PID_VALUES:
            raise CompileError(f"{where}.matchPIDs[{k}].values: at most {lib.TH_MAX_PID_VALUES}")
        m = c.pids[k]
        for j, v in enumerate(mp.values):
            m.pids[j] = v
        m.nvalues = len(mp.values)
        m.negate = mp.operator == "NotIn"
        m.flags = ((lib.TH_PID_FOLLOW_FORKS if mp.follow_forks else 0)
                   | (lib.TH_PID_NAMESPACE if mp.is_namespace_pid else 0))
    c.npids = len(sel.match_pids)


def _compile_namespaces(sel: Selector, c, host_ns: HostNamespaces, where: str):
    if len(sel.match_namespaces) > lib.TH_MAX_NS_MATCH:
        raise CompileError(f"{where}.matchNamespaces: at most {lib.TH_MAX_NS_MATCH} entries")
    for k, mn in enumerate(sel.match_namespaces):
        here = f"{where}.matchNamespaces[{k}]"
        kind = _NS_INDEX[mn.namespace]
        inums = []
        for v in mn.values:
            if v == HOST_NS:
                inum = host_ns.inode(_NS_RECORD_KIND[kind])
                if not inum:
                    raise CompileError(f"{here}: host_ns for {mn.namespace} is unknown on this host "
                                       "(cannot read /proc/1/ns or /proc/self/ns)")
                inums.append(inum)
            else:
                inums.append(int(v))
        if len(inums) > lib.TH_MAX_INT_VALUES:
            raise CompileError(f"{here}.values: at most {lib.TH_MAX_INT_VALUES}")
        m = c.ns[k]
        m.kind = kind
        m.negate = mn.operator == "NotIn"
        for j, inum in enumerate(inums):
            m.inums[j] = inum
        m.nvalues = len(inums)
    c.nns = len(sel.match_namespaces)


def _host_userns(host_ns: HostNamespaces, here: str) -> int:
    """isNamespaceCapability (Tetragon): the capabilities count only for a task
    outside the host user namespace, whose caps are namespaced; a task in the
    host user namespace never matches (In or NotIn)."""
    inum = host_ns.inode("user")
    if not inum:
        raise CompileError(f"{here}.isNamespaceCapability: the host user namespace is unknown on this "
                           "host (cannot read /proc/1/ns or /proc/self/ns)")
    return inum


def _compile_caps(sel: Selector, c, host_ns: HostNamespaces, where: str):
    if not sel.match_capabilities:
        return
    if len(sel.match_capabilities) > 1:
        raise CompileError(f"{where}.matchCapabilities: only one entry per selector is supported")
    mc = sel.match_capabilities[0]
    c.caps_kind = _CAP_SETS[mc.type]
    c.caps_mask = mc.mask
    c.caps_negate = mc.operator == "NotIn"
    if mc.is_namespace_capability:
        c.caps_userns = _host_userns(host_ns, f"{where}.matchCapabilities[0]")


def _compile_cap_changes(sel: Selector, c, host_ns: HostNamespaces, where: str):
    """Tetragon: In matches when one of the listed capabilities of the set
    differs from its value at the process's last exec; NotIn when only
    capabilities not listed differ."""
    if not sel.match_capability_changes:
        return
    if len(sel.match_capability_changes) > 1:
        raise CompileError(f"{where}.matchCapabilityChanges: only one entry per selector is supported")
    mc = sel.match_capability_changes[0]
    c.capch_kind = _CAP_SETS[mc.type]
    c.capch_mask = mc.mask
    c.capch_negate = mc.operator == "NotIn"
    if mc.is_namespace_capability:
        c.capch_userns = _host_userns(host_ns, f"{where}.matchCapabilityChanges[0]")


def _compile_ns_changes(sel: Selector, c, where: str):
    """Tetragon: In matches when one of the listed namespaces differs from the
    one at the process's last exec; NotIn when one of those not listed does."""
    if not sel.match_namespace_changes:
        return
    if len(sel.match_namespace_changes) > 1:
        raise CompileError(f"{where}.matchNamespaceChanges: only one entry per selector is supported")
    nc = sel.match_namespace_changes[0]
    listed = 0
    for kind in nc.values:
        listed |= 1 << _NS_INDEX[kind]
    every = (1 << lib.TH_NS_COUNT) - 1
    c.nsch_mask = listed if nc.operator == "In" else every & ~listed
    if not c.nsch_mask:     # 0 would read as "no matcher" and widen the selector
        raise CompileError(f"{where}.matchNamespaceChanges[0]: {nc.operator} "
                           f"{'every namespace kind' if listed else 'no namespace kind'} never matches")


def _compile_action(hook: Hook, sel: Selector, c, arg_kinds: list[int], where: str):
    """One action per selector in the kernel (th_selector.action), plus Post's
    rate limit; Post is implied unless NoPost is given (Tetragon's rule)."""
    actions = sel.effective_actions
    special = [a for a in actions if a.is_enforcement or a.arg_sock is not None]
    if len(special) > 1:
        raise CompileError(f"{where}.matchActions: {', '.join(a.action for a in special)}: the kernel side "
                           "takes one of Sigkill/Signal/Override/TrackSock/UntrackSock per selector")
    chosen = special[0] if special else actions[0]
    limited = [a for a in actions if a.rate_limit_seconds]
    if limited:
        c.rate_limit_ns = limited[0].rate_limit_seconds * 1_000_000_000
        c.rate_scope = _RATE_SCOPES[limited[0].rate_limit_scope or "thread"]
    if chosen.action not in _ACTIONS:
        raise CompileError(f"{where}.matchActions: action {chosen.action} is not supported")
    c.action = _ACTIONS[chosen.action]
    if chosen.action == "Signal":
        c.action_arg = chosen.arg_sig or 0
    elif chosen.action == "Override":
        c.action_arg = chosen.arg_error or 0      # validate warns: Tetragon returns 0 then
    elif chosen.arg_sock is not None:
        if chosen.arg_sock >= len(arg_kinds) or arg_kinds[chosen.arg_sock] not in _SOCK_KINDS:
            raise CompileError(f"{where}.matchActions: {chosen.action}: argSock {chosen.arg_sock} is not "
                               "a sock or socket argument")
        c.action_arg = chosen.arg_sock
    c.no_post = any(a.action == "NoPost" for a in actions)


def _yaml_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)
