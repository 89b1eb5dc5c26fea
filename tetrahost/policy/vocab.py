"""The words of a TracingPolicy: argument types, operators, actions, namespaces.

Each table splits what tetrahost implements from what Tetragon knows but tetrahost
does not implement yet, so a policy using the latter gets a precise "not supported
by tetrahost (yet)" instead of a generic "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ArgKind(str, Enum):
    """How an argument is read and which operators can filter on it."""

    INTEGER = "integer"  # fixed-width number read from a register
    STRING = "string"  # bytes copied from memory (user or kernel string, buffer)
    PATH = "path"  # a kernel object resolved to its full path in the kernel
    NETWORK = "network"  # socket-ish object: addresses, ports, protocol, family
    CRED = "cred"  # struct cred, user_namespace: reported, not filterable
    OBJECT = "object"  # a kernel object summarised into fields (bpf_attr, module...): reported only
    NOP = "nop"  # placeholder: occupies an index, nothing is read


@dataclass(frozen=True)
class ArgTypeInfo:
    base: str  # canonical name, aliases folded (int -> int32, size_t -> uint64)
    kind: ArgKind
    bits: int = 0  # integers only
    signed: bool = False  # integers only


def _int(base: str, bits: int, signed: bool) -> ArgTypeInfo:
    return ArgTypeInfo(base, ArgKind.INTEGER, bits, signed)


# Types tetrahost reads. Spellings and widths follow Tetragon's argument_types
# documentation ("int, sint32, int32" = 32-bit signed, "ulong, uint64, size_t" =
# 64-bit unsigned, ...).
SUPPORTED_ARG_TYPES: dict[str, ArgTypeInfo] = {
    "int8": _int("int8", 8, True), "sint8": _int("int8", 8, True),
    "uint8": _int("uint8", 8, False),
    "int16": _int("int16", 16, True), "sint16": _int("int16", 16, True),
    "uint16": _int("uint16", 16, False),
    "int": _int("int32", 32, True), "int32": _int("int32", 32, True),
    "sint32": _int("int32", 32, True),
    "uint32": _int("uint32", 32, False),
    "long": _int("int64", 64, True), "int64": _int("int64", 64, True),
    "sint64": _int("int64", 64, True),
    "ulong": _int("uint64", 64, False), "uint64": _int("uint64", 64, False),
    "size_t": _int("uint64", 64, False),
    # a capability number (cap_capable's `cap` argument): filter by number or CAP_ name
    "capability": _int("capability", 32, True),
    # a 64-bit capability set: filter with Mask / Equal by number or CAP_ name
    "kernel_cap_t": _int("kernel_cap_t", 64, False),
    # the same, named after the set it is (Tetragon renders them as cap_*_arg)
    "cap_inheritable": _int("cap_inheritable", 64, False),
    "cap_permitted": _int("cap_permitted", 64, False),
    "cap_effective": _int("cap_effective", 64, False),
    "string": ArgTypeInfo("string", ArgKind.STRING),
    "char_buf": ArgTypeInfo("char_buf", ArgKind.STRING),
    "fd": ArgTypeInfo("fd", ArgKind.PATH),
    "file": ArgTypeInfo("file", ArgKind.PATH),
    "path": ArgTypeInfo("path", ArgKind.PATH),
    "dentry": ArgTypeInfo("dentry", ArgKind.PATH),
    "linux_binprm": ArgTypeInfo("linux_binprm", ArgKind.PATH),
    "cred": ArgTypeInfo("cred", ArgKind.CRED),
    "user_namespace": ArgTypeInfo("user_namespace", ArgKind.CRED),
    "sock": ArgTypeInfo("sock", ArgKind.NETWORK),
    "sockaddr": ArgTypeInfo("sockaddr", ArgKind.NETWORK),
    "socket": ArgTypeInfo("socket", ArgKind.NETWORK),
    "skb": ArgTypeInfo("skb", ArgKind.NETWORK),
    "net_device": ArgTypeInfo("net_device", ArgKind.NETWORK),
    # the syscall being made and its ABI (raw_syscalls' id): the number, plus
    # 0x80000000 (Tetragon's Is32Bit) when a 32-bit program made it
    "syscall64": _int("syscall64", 64, True),
    # kernel objects read into a record of their own (csrc/events.h), as Tetragon
    # reads them; Tetragon filters none of them, nor does tetrahost
    "kiocb": ArgTypeInfo("kiocb", ArgKind.OBJECT),          # its file's path
    "iov_iter": ArgTypeInfo("iov_iter", ArgKind.OBJECT),    # its first segment's bytes
    "bpf_attr": ArgTypeInfo("bpf_attr", ArgKind.OBJECT),
    "bpf_map": ArgTypeInfo("bpf_map", ArgKind.OBJECT),
    "perf_event": ArgTypeInfo("perf_event", ArgKind.OBJECT),
    "module": ArgTypeInfo("module", ArgKind.OBJECT),
    "load_info": ArgTypeInfo("load_info", ArgKind.OBJECT),
    # nop is Tetragon's placeholder for an argument it should not read; it costs the
    # kernel side nothing, and several real policies need it to skip an index.
    "nop": ArgTypeInfo("nop", ArgKind.NOP),
}

# Types Tetragon accepts (CRD enum of KProbeArg.type plus argument_types docs) that
# tetrahost cannot read yet.
TETRAGON_ONLY_ARG_TYPES = frozenset({
    "auto", "char_iovec", "filename", "const_buf", "bpf_prog",
    "data_loc", "bpf_cmd",
})

# --- matchArgs / matchReturnArgs operators --------------------------------------

# set membership on integers: values, min:max ranges and "list:NAME" syscall lists
MAP_OPERATORS = ("InMap", "NotInMap")
INTEGER_OPERATORS = ("Equal", "NotEqual", "GreaterThan", "LessThan", "Mask", *MAP_OPERATORS)
STRING_OPERATORS = ("Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
ADDRESS_OPERATORS = ("SAddr", "DAddr", "NotSAddr", "NotDAddr")
PORT_OPERATORS = ("SPort", "DPort", "NotSPort", "NotDPort")
PRIV_PORT_OPERATORS = ("SPortPriv", "DPortPriv", "NotSPortPriv", "NotDPortPriv")
NETWORK_NAME_OPERATORS = ("Protocol", "Family", "State")

MATCHARG_OPERATORS = (
    "Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix",
    "GreaterThan", "LessThan", "Mask", *MAP_OPERATORS,
    *ADDRESS_OPERATORS, *PORT_OPERATORS, *PRIV_PORT_OPERATORS, *NETWORK_NAME_OPERATORS,
)

# Alternative spellings Tetragon accepts, folded to one name in the model.
# ("NotSportPriv" is the spelling in Tetragon's CRD enum.)
MATCHARG_OPERATOR_ALIASES = {
    "GT": "GreaterThan", "LT": "LessThan", "NotSportPriv": "NotSPortPriv",
}

TETRAGON_ONLY_MATCHARG_OPERATORS = frozenset({
    "FileType", "NotFileType", "InRange", "NotInRange",
    "CapabilitiesGained",
})

# Network operators each socket-like type can answer. A sockaddr holds one
# address (the one being bound or connected to), which Tetragon exposes as the
# "source" fields; it has no protocol or state.
NETWORK_OPERATORS_BY_TYPE = {
    "sock": (*ADDRESS_OPERATORS, *PORT_OPERATORS, *PRIV_PORT_OPERATORS, "Protocol", "Family", "State"),
    "socket": (*ADDRESS_OPERATORS, *PORT_OPERATORS, *PRIV_PORT_OPERATORS, "Protocol", "Family", "State"),
    "skb": (*ADDRESS_OPERATORS, *PORT_OPERATORS, *PRIV_PORT_OPERATORS, "Protocol", "Family"),
    "sockaddr": ("SAddr", "NotSAddr", "SPort", "NotSPort", "SPortPriv", "NotSPortPriv", "Family"),
    # its name, as a string (Tetragon's matchArgs on net_device: Equal "lo")
    "net_device": STRING_OPERATORS,
}

# --- process filters --------------------------------------------------------------

BINARY_OPERATORS = ("In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix")
FOLLOW_CHILDREN_OPERATORS = ("In", "NotIn")  # Tetragon docs, "Follow children"
SET_OPERATORS = ("In", "NotIn")

NAMESPACE_KINDS = ("Uts", "Ipc", "Mnt", "Pid", "PidForChildren", "Net", "Time",
                   "TimeForChildren", "Cgroup", "User")
HOST_NS = "host_ns"

CAPABILITY_SETS = ("Effective", "Inheritable", "Permitted")

# --- actions ---------------------------------------------------------------------

SUPPORTED_ACTIONS = ("Post", "NoPost", "Sigkill", "Signal", "Override", "TrackSock", "UntrackSock", "Set",
                     "DnsLookup", "GetUrl", "NotifyEnforcer")
# done by the agent in user space (tetrahost/useractions.py) on the posted event
USER_SPACE_ACTIONS = frozenset({"DnsLookup", "GetUrl"})
SOCKET_ACTIONS = frozenset({"TrackSock", "UntrackSock"})   # argSock: whose owner is recorded / dropped
# Set (USDT argument writes) changes what a program does: not done in policy-mode monitor
ENFORCEMENT_ACTIONS = frozenset({"Sigkill", "Signal", "Override", "Set"})
TETRAGON_ONLY_ACTIONS = frozenset({
    "FollowFD", "UnfollowFD", "CopyFD", "CleanupEnforcerNotification",
})
RATE_LIMIT_SCOPES = ("thread", "process", "global")

# returnArgAction values (Tetragon CRD: "Available actions are: Post;TrackSock;UntrackSock")
SUPPORTED_RETURN_ARG_ACTIONS = ("Post", "TrackSock", "UntrackSock")

# --- policy options (spec.options) -----------------------------------------------

POLICY_MODES = ("monitor", "enforce")
# Tetragon options that only tune how Tetragon attaches; harmless to accept.
ACCEPTED_ATTACH_OPTIONS = frozenset({"disable-kprobe-multi", "disable-uprobe-multi"})
