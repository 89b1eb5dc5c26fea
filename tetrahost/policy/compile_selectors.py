"""Selectors -> th_selector (hookconfig.SelectorConfig; and the hook's matchReturnArgs matchers).

Each function compiles one kind of matcher of one selector and raises
CompileError, naming the selector and field, for what the kernel side cannot
evaluate: a matcher is never dropped, since that would widen what a policy
matches (or kills).
"""
from __future__ import annotations

from tetrahost import constants as abi
from tetrahost.policy.compiled import Cidrs, CompileError, StringSets, port_range_value, value_bytes
from tetrahost.policy.model import Hook, MatchArg, Selector
from tetrahost.policy.vocab import HOST_NS, NAMESPACE_KINDS, ArgKind

_INT_OPS = {"Equal": (abi.TH_MATCH_EQUAL, 0), "NotEqual": (abi.TH_MATCH_EQUAL, 1),
            "GreaterThan": (abi.TH_MATCH_GT, 0), "LessThan": (abi.TH_MATCH_LT, 0),
            "Mask": (abi.TH_MATCH_MASK, 0)}
_STR_OPS = {"Equal": (abi.TH_MATCH_EQUAL, 0), "NotEqual": (abi.TH_MATCH_EQUAL, 1),
            "Prefix": (abi.TH_MATCH_PREFIX, 0), "NotPrefix": (abi.TH_MATCH_PREFIX, 1),
            "Postfix": (abi.TH_MATCH_POSTFIX, 0), "NotPostfix": (abi.TH_MATCH_POSTFIX, 1)}
_BIN_OPS = {"In": (abi.TH_MATCH_EQUAL, 0), "NotIn": (abi.TH_MATCH_EQUAL, 1),
            "Prefix": (abi.TH_MATCH_PREFIX, 0), "NotPrefix": (abi.TH_MATCH_PREFIX, 1),
            "Postfix": (abi.TH_MATCH_POSTFIX, 0), "NotPostfix": (abi.TH_MATCH_POSTFIX, 1)}
# network operators -> (enum th_match_op, negate)
_NET_OPS = {
    "SAddr": (abi.TH_MATCH_SADDR, 0), "NotSAddr": (abi.TH_MATCH_SADDR, 1),
    "DAddr": (abi.TH_MATCH_DADDR, 0), "NotDAddr": (abi.TH_MATCH_DADDR, 1),
    "SPort": (abi.TH_MATCH_SPORT, 0), "NotSPort": (abi.TH_MATCH_SPORT, 1),
    "DPort": (abi.TH_MATCH_DPORT, 0), "NotDPort": (abi.TH_MATCH_DPORT, 1),
    "SPortPriv": (abi.TH_MATCH_SPORT_PRIV, 0), "NotSPortPriv": (abi.TH_MATCH_SPORT_PRIV, 1),
    "DPortPriv": (abi.TH_MATCH_DPORT_PRIV, 0), "NotDPortPriv": (abi.TH_MATCH_DPORT_PRIV, 1),
    "Protocol": (abi.TH_MATCH_PROTOCOL, 0), "Family": (abi.TH_MATCH_FAMILY, 0),
    "State": (abi.TH_MATCH_STATE, 0),
}
_RATE_SCOPES = {"thread": abi.TH_RATE_THREAD, "process": abi.TH_RATE_PROCESS, "global": abi.TH_RATE_GLOBAL}
_CAP_SETS = {"Effective": abi.TH_CAPS_EFFECTIVE, "Permitted": abi.TH_CAPS_PERMITTED,
             "Inheritable": abi.TH_CAPS_INHERITABLE}
ACTIONS = {"Post": abi.TH_ACTION_POST, "NoPost": abi.TH_ACTION_NOPOST, "Sigkill": abi.TH_ACTION_SIGKILL,
           "Signal": abi.TH_ACTION_SIGNAL, "Override": abi.TH_ACTION_OVERRIDE,
           "TrackSock": abi.TH_ACTION_TRACK_SOCK, "UntrackSock": abi.TH_ACTION_UNTRACK_SOCK,
           "Set": abi.TH_ACTION_SET, "NotifyEnforcer": abi.TH_ACTION_NOTIFY_ENFORCER,
           # user-space actions: the kernel posts, the agent resolves/fetches (tetrahost/useractions.py)
           "DnsLookup": abi.TH_ACTION_POST, "GetUrl": abi.TH_ACTION_POST}
_MAP_OPS = {"InMap": 0, "NotInMap": 1}
# policy namespace names -> enum th_ns (NAMESPACE_KINDS order is the kernel's order)
_NS_INDEX = {name: i for i, name in enumerate(NAMESPACE_KINDS)}
_NS_RECORD_KIND = ("uts", "ipc", "mnt", "pid", "pid_for_children", "net", "time",
                   "time_for_children", "cgroup", "user")


def compile_selector(hook: Hook, sel: Selector, index: int, c, sets: StringSets, host_ns):
    """Selector `index` of the hook into c (struct th_selector)."""
    where = f"selectors[{index}]"
    if sel.match_return_actions:
        raise CompileError(f"{where}: matchReturnActions is not supported by the kernel side yet")
    _compile_args(hook, sel.match_args, c, sets, where)
    _compile_binaries(sel, index, c, sets, where)
    _compile_pids(sel, c, where)
    _compile_namespaces(sel, c, host_ns, where)
    _compile_caps(sel, c, host_ns, where)
    _compile_cap_changes(sel, c, host_ns, where)
    _compile_ns_changes(sel, c, where)
    _compile_action(sel, c, where)


def compile_return_args(hook: Hook, sel: Selector, m, where: str) -> None:
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
    _int_matcher(ma, m, f"{here}[0]")


def _int_matcher(ma: MatchArg, m, here: str) -> None:
    """An integer matcher (matchArgs or matchReturnArgs) into m (th_arg_matcher)."""
    if ma.operator not in _INT_OPS:
        raise CompileError(f"{here}.operator {ma.operator} on an integer is not supported")
    m.op, m.negate = _INT_OPS[ma.operator]
    if len(ma.parsed) > abi.TH_MAX_INT_VALUES:
        raise CompileError(f"{here}.values: {len(ma.parsed)} values; at most {abi.TH_MAX_INT_VALUES}")
    for j, v in enumerate(ma.parsed):
        m.values[j] = as_int64(int(v))
    m.nvalues = len(ma.parsed)


def as_int64(value: int) -> int:
    """A 64-bit value as the kernel's int64_t holds it: validation admits
    uint64 values up to 2**64-1 (Equal, Mask), stored as their bit pattern."""
    if not -(1 << 63) <= value < (1 << 64):
        raise CompileError(f"{value} does not fit in 64 bits")
    return value - (1 << 64) if value >= (1 << 63) else value


def _compile_args(hook: Hook, match_args: tuple[MatchArg, ...], c, sets: StringSets, where: str):
    if len(match_args) > abi.TH_MAX_MATCH_ARGS:
        raise CompileError(f"{where}.matchArgs: {len(match_args)} entries; at most {abi.TH_MAX_MATCH_ARGS}")
    for k, ma in enumerate(match_args):
        here = f"{where}.matchArgs[{k}]"
        m = c.args[k]
        m.arg = ma.arg_position
        if ma.arg_kind is ArgKind.INTEGER and ma.operator in _MAP_OPS:
            m.op, m.negate = abi.TH_MATCH_IN_MAP, _MAP_OPS[ma.operator]
            m.set_id = sets.add_ints([type(r)(as_int64(r.low), as_int64(r.high)) for r in ma.parsed], here)
        elif ma.arg_kind is ArgKind.INTEGER:
            _int_matcher(ma, m, here)
        elif ma.arg_kind in (ArgKind.STRING, ArgKind.PATH) or ma.arg_base_type == "net_device":
            if ma.operator not in _STR_OPS:
                raise CompileError(f"{here}.operator {ma.operator} is not evaluated in the kernel yet "
                                   f"(supported on strings and paths: {', '.join(_STR_OPS)})")
            m.op, m.negate = _STR_OPS[ma.operator]
            values = [value_bytes(v) for v in ma.parsed]
            if ma.arg_base_type == "net_device":
                m.op, values = _netdev_name_matcher(m.op, values)
            m.set_id = sets.add(m.op, values, here)
        elif ma.arg_kind is ArgKind.NETWORK:
            _compile_net_matcher(ma, m, sets.cidrs, here)
        else:
            raise CompileError(f"{here}: filtering {ma.arg_base_type} arguments is not supported yet")
    c.nargs = len(match_args)


def _netdev_name_matcher(op: int, values: list[bytes]) -> tuple[int, list[bytes]]:
    """A net_device is matched by its name, which starts its slot but is
    followed by the rest of the device's tuple, not by zeros; the kernel side
    counts the name's NUL in its length.  So Equal is a prefix ending in the
    NUL ("lo\\0" is "lo", never "lo0"), and Postfix's values end in it too."""
    if op == abi.TH_MATCH_EQUAL:
        return abi.TH_MATCH_PREFIX, [v + b"\0" for v in values]
    if op == abi.TH_MATCH_POSTFIX:
        return op, [v + b"\0" for v in values]
    return op, values


def _compile_net_matcher(ma: MatchArg, m, cidrs: Cidrs, here: str):
    """SAddr/DPort/Protocol... on a sock, socket, sockaddr or skb argument."""
    if ma.operator not in _NET_OPS:
        raise CompileError(f"{here}.operator {ma.operator} on a {ma.arg_base_type} argument is not "
                           f"supported (supported: {', '.join(_NET_OPS)})")
    m.op, m.negate = _NET_OPS[ma.operator]
    if len(ma.parsed) > abi.TH_MAX_INT_VALUES:
        raise CompileError(f"{here}.values: {len(ma.parsed)} values; the kernel side matches at most "
                           f"{abi.TH_MAX_INT_VALUES} per matchArgs entry (split them over two selectors)")
    for j, v in enumerate(ma.parsed):
        if m.op in (abi.TH_MATCH_SADDR, abi.TH_MATCH_DADDR):
            m.values[j] = cidrs.add(v, here)
        elif m.op in (abi.TH_MATCH_SPORT, abi.TH_MATCH_DPORT):
            m.values[j] = port_range_value(v)
        else:
            m.values[j] = int(v)
    m.nvalues = len(ma.parsed)


def _compile_binaries(sel: Selector, index: int, c, sets: StringSets, where: str):
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
    values = [value_bytes(v) for v in mb.values]
    c.bin_set_id = sets.add(c.bin_op, values, here)
    if mb.follow_children:
        sets.out.follow.append((index, tuple(values)))


def _compile_pids(sel: Selector, c, where: str):
    """Each entry: In/NotIn over up to TH_MAX_PID_VALUES pids; entries are ANDed."""
    if len(sel.match_pids) > abi.TH_MAX_PID_MATCH:
        raise CompileError(f"{where}.matchPIDs: {len(sel.match_pids)} entries; the kernel side "
                           f"evaluates at most {abi.TH_MAX_PID_MATCH} per selector")
    for k, mp in enumerate(sel.match_pids):
        if len(mp.values) > abi.TH_MAX_PID_VALUES:
            raise CompileError(f"{where}.matchPIDs[{k}].values: at most {abi.TH_MAX_PID_VALUES}")
        m = c.pids[k]
        for j, v in enumerate(mp.values):
            m.pids[j] = v
        m.nvalues = len(mp.values)
        m.negate = mp.operator == "NotIn"
        m.flags = ((abi.TH_PID_FOLLOW_FORKS if mp.follow_forks else 0)
                   | (abi.TH_PID_NAMESPACE if mp.is_namespace_pid else 0))
    c.npids = len(sel.match_pids)


def _compile_namespaces(sel: Selector, c, host_ns, where: str):
    if len(sel.match_namespaces) > abi.TH_MAX_NS_MATCH:
        raise CompileError(f"{where}.matchNamespaces: at most {abi.TH_MAX_NS_MATCH} entries")
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
        if len(inums) > abi.TH_MAX_INT_VALUES:
            raise CompileError(f"{here}.values: at most {abi.TH_MAX_INT_VALUES}")
        m = c.ns[k]
        m.kind = kind
        m.negate = mn.operator == "NotIn"
        for j, inum in enumerate(inums):
            m.inums[j] = inum
        m.nvalues = len(inums)
    c.nns = len(sel.match_namespaces)


def _host_userns(host_ns, here: str) -> int:
    """isNamespaceCapability (Tetragon): the capabilities count only for a task
    outside the host user namespace, whose caps are namespaced; a task in the
    host user namespace never matches (In or NotIn)."""
    inum = host_ns.inode("user")
    if not inum:
        raise CompileError(f"{here}.isNamespaceCapability: the host user namespace is unknown on this "
                           "host (cannot read /proc/1/ns or /proc/self/ns)")
    return inum


def _capability_entry(entries, field: str, host_ns, where: str):
    """The one matchCapabilities / matchCapabilityChanges entry of a selector,
    as (set kind, mask, negate, host user namespace inode or 0)."""
    if len(entries) > 1:
        raise CompileError(f"{where}.{field}: only one entry per selector is supported")
    mc = entries[0]
    userns = _host_userns(host_ns, f"{where}.{field}[0]") if mc.is_namespace_capability else 0
    return _CAP_SETS[mc.type], mc.mask, mc.operator == "NotIn", userns


def _compile_caps(sel: Selector, c, host_ns, where: str):
    if sel.match_capabilities:
        c.caps_kind, c.caps_mask, c.caps_negate, c.caps_userns = _capability_entry(
            sel.match_capabilities, "matchCapabilities", host_ns, where)


def _compile_cap_changes(sel: Selector, c, host_ns, where: str):
    """Tetragon: In matches when one of the listed capabilities of the set
    differs from its value at the process's last exec; NotIn when only
    capabilities not listed differ."""
    if sel.match_capability_changes:
        c.capch_kind, c.capch_mask, c.capch_negate, c.capch_userns = _capability_entry(
            sel.match_capability_changes, "matchCapabilityChanges", host_ns, where)


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
    every = (1 << abi.TH_NS_COUNT) - 1
    c.nsch_mask = listed if nc.operator == "In" else every & ~listed
    if not c.nsch_mask:     # 0 would read as "no matcher" and widen the selector
        raise CompileError(f"{where}.matchNamespaceChanges[0]: {nc.operator} "
                           f"{'every namespace kind' if listed else 'no namespace kind'} never matches")


def _compile_action(sel: Selector, c, where: str):
    """One action per selector in the kernel (th_selector.action), plus Post's
    rate limit; Post is implied unless NoPost is given (Tetragon's rule)."""
    actions = sel.effective_actions
    special = [a for a in actions if a.is_enforcement or a.arg_sock is not None or a.action == "NotifyEnforcer"]
    if len(special) > 1:
        raise CompileError(f"{where}.matchActions: {', '.join(a.action for a in special)}: the kernel side "
                           "takes one of Sigkill/Signal/Override/Set/TrackSock/UntrackSock/NotifyEnforcer "
                           "per selector")
    chosen = special[0] if special else actions[0]
    limited = [a for a in actions if a.rate_limit_seconds]
    if limited:
        c.rate_limit_ns = limited[0].rate_limit_seconds * 1_000_000_000
        c.rate_scope = _RATE_SCOPES[limited[0].rate_limit_scope or "thread"]
    c.action = ACTIONS[chosen.action]        # validation admits only these
    if chosen.action == "Signal":
        c.action_arg = chosen.arg_sig or 0
    elif chosen.action == "Override":
        c.action_arg = chosen.arg_error or 0      # validate warns: Tetragon returns 0 then
    elif chosen.action == "NotifyEnforcer":
        c.action_arg = chosen.arg_sig or 0        # the enforcer sends it
        c.notify_error = chosen.arg_error or 0    # ... and returns it where the kernel allows
    elif chosen.arg_sock is not None:
        c.action_arg = chosen.arg_sock       # validation checked it names a sock/socket argument
    elif chosen.action == "Set":
        c.action_arg = chosen.arg_index      # the USDT argument, th_usdt_set writes its memory
        c.set_value = chosen.arg_value
    c.no_post = any(a.action == "NoPost" for a in actions)
    c.ima_hash = any(a.ima_hash for a in actions)   # used where the hook's IMA program is attached
    c.stack_traces = ((abi.TH_STACK_KERNEL if any(a.kernel_stack_trace for a in actions) else 0)
                      | (abi.TH_STACK_USER if any(a.user_stack_trace for a in actions) else 0))
