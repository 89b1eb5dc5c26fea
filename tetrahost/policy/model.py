"""The accepted form of a TracingPolicy: what the kernel compiler consumes.

Everything here has been validated: names are known, values are parsed into
their typed form (ints, networks, port ranges, canonical paths), aliases are
folded (GT -> GreaterThan, int -> int32). Originals are kept next to parsed
values so `policy check` and events can show what was written and what it
became. Every element carries `source` (file, line, path) for later messages
(e.g. "this hook cannot attach on this kernel").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Union

from .errors import Location
from .vocab import ENFORCEMENT_ACTIONS, HOST_NS, ArgKind

_NO_SOURCE = Location("", 0, "")


@dataclass(frozen=True)
class PathValue:
    """A path as written in the policy and as it will be matched in the kernel."""

    original: str
    canonical: str

    @property
    def changed(self) -> bool:
        return self.original != self.canonical

    def describe(self) -> str:
        return f"{self.original} \u2192 {self.canonical}" if self.changed else self.original


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int  # inclusive; equal to low for a single port

    def describe(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


@dataclass(frozen=True)
class IntRange:
    """An InMap/NotInMap value: the integers low..high (inclusive), from a
    number, a "min:max" range, or a syscall list ("list:NAME")."""

    low: int
    high: int

    @property
    def count(self) -> int:
        return self.high - self.low + 1

    def describe(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
# The typed form of one matchArgs value, by operator family:
#   integer operators / Protocol / Family / State -> int
#   string operators on STRING args                -> str
#   string operators on PATH args                  -> PathValue
#   address operators                              -> IPv4Network | IPv6Network
#   port operators                                 -> PortRange
#   InMap / NotInMap                               -> IntRange (a list: one per syscall)
MatchValue = Union[int, str, PathValue, IPNetwork, PortRange, IntRange]


@dataclass(frozen=True)
class Arg:
    index: int  # function argument index (kprobe/lsm) or format field index (tracepoint)
    type: str  # as written ("int", "file", ...)
    base_type: str  # aliases folded ("int32", "file", ...)
    kind: ArgKind
    bits: int = 0  # integer width, 0 for non-integers
    signed: bool = False
    label: str = ""
    # Tetragon's sizeArgIndex is 1-based ("index + 1"); 0 means not given.
    size_arg_index: int = 0
    return_copy: bool = False
    max_data: bool = False
    source: Location = _NO_SOURCE
    # `resolve:` struct members followed from the argument ("mm.owner.comm"),
    # `btfType:` the struct it is read as a pointer to; resolve_line: the
    # line of `resolve`.  resolved: the walk over this kernel's BTF
    # (policy/resolve.py ResolvedPath), or None with resolve_unavailable
    # saying why it could not be done here (the hook is then not loaded).
    resolve: str = ""
    btf_type: str = ""
    resolve_line: int = 0
    btf_type_line: int = 0
    resolved: object = None
    resolve_unavailable: str = ""

    @property
    def size_arg_position(self) -> int | None:
        """0-based index of the argument holding this buffer's size, if any."""
        return self.size_arg_index - 1 if self.size_arg_index else None


@dataclass(frozen=True)
class MatchArg:
    # As written: the function argument index for kprobes/LSM hooks (= Arg.index),
    # the position in Hook.args for tracepoints; 0 for matchReturnArgs.
    index: int
    arg_position: int  # position of the filtered arg in Hook.args; -1 = the return value
    operator: str  # canonical operator name (GT folded to GreaterThan, ...)
    operator_written: str
    values: tuple[str, ...]  # as written (YAML numbers turned into their text)
    parsed: tuple[MatchValue, ...]  # typed values, same order as `values`
    arg_base_type: str  # base type of the argument being filtered
    arg_kind: ArgKind
    source: Location = _NO_SOURCE


@dataclass(frozen=True)
class MatchBinaries:
    operator: str  # In, NotIn, Prefix, NotPrefix, Postfix, NotPostfix
    values: tuple[PathValue, ...]  # Postfix values are not paths: canonical == original
    follow_children: bool = False
    source: Location = _NO_SOURCE


@dataclass(frozen=True)
class MatchPIDs:
    operator: str  # In, NotIn
    values: tuple[int, ...]
    follow_forks: bool = False
    is_namespace_pid: bool = False
    source: Location = _NO_SOURCE


@dataclass(frozen=True)
class MatchNamespace:
    namespace: str  # one of vocab.NAMESPACE_KINDS
    operator: str  # In, NotIn
    values: tuple[Union[int, str], ...]  # inode numbers, or vocab.HOST_NS to resolve at load
    source: Location = _NO_SOURCE

    @property
    def uses_host_ns(self) -> bool:
        return HOST_NS in self.values


@dataclass(frozen=True)
class MatchCapabilities:
    """Used for both matchCapabilities and matchCapabilityChanges."""

    type: str  # Effective, Inheritable, Permitted
    operator: str  # In, NotIn
    values: tuple[str, ...]  # CAP_* names
    numbers: tuple[int, ...]  # capability numbers, same order
    is_namespace_capability: bool = False
    source: Location = _NO_SOURCE

    @property
    def mask(self) -> int:
        bits = 0
        for number in self.numbers:
            bits |= 1 << number
        return bits


@dataclass(frozen=True)
class MatchNamespaceChanges:
    operator: str  # In, NotIn
    values: tuple[str, ...]  # namespace kinds
    source: Location = _NO_SOURCE


@dataclass(frozen=True)
class Action:
    action: str  # Post, NoPost, Sigkill, Signal, Override
    arg_error: int | None = None  # Override: the return value (e.g. -1 = -EPERM)
    arg_sig: int | None = None  # Signal: the signal number (Sigkill is Signal 9)
    rate_limit: str = ""  # Post: as written ("1m")
    rate_limit_seconds: int = 0  # Post: parsed; 0 = no rate limit
    rate_limit_scope: str = ""  # Post: thread (default), process, global
    arg_sock: int | None = None  # TrackSock/UntrackSock: position in Hook.args of the sock
    arg_index: int | None = None  # Set: the USDT argument written (its index, as args[].index)
    arg_value: int | None = None  # Set: the value written
    arg_fqdn: str = ""  # DnsLookup: the name resolved (user space)
    arg_url: str = ""  # GetUrl: the URL fetched (user space)
    # NotifyEnforcer: arg_error is the return the enforced call gets, arg_sig the signal (0: none)
    kernel_stack_trace: bool = False  # Post: the kernel stack goes with the event
    user_stack_trace: bool = False  # Post: the user stack too
    ima_hash: bool = False  # Post (LSM hooks): the IMA hash of the file/linux_binprm argument
    source: Location = _NO_SOURCE

    @property
    def is_enforcement(self) -> bool:
        return self.action in ENFORCEMENT_ACTIONS

    @property
    def signal(self) -> int | None:
        """Signal this action sends, folding Sigkill into Signal 9."""
        if self.action == "Sigkill":
            return 9
        if self.action == "Signal":
            return self.arg_sig
        return None


@dataclass(frozen=True)
class Selector:
    index: int
    match_args: tuple[MatchArg, ...] = ()
    match_return_args: tuple[MatchArg, ...] = ()
    match_binaries: tuple[MatchBinaries, ...] = ()
    match_pids: tuple[MatchPIDs, ...] = ()
    match_namespaces: tuple[MatchNamespace, ...] = ()
    match_capabilities: tuple[MatchCapabilities, ...] = ()
    match_namespace_changes: tuple[MatchNamespaceChanges, ...] = ()
    match_capability_changes: tuple[MatchCapabilities, ...] = ()
    # Empty match_actions means Tetragon's default: Post.
    match_actions: tuple[Action, ...] = ()
    match_return_actions: tuple[Action, ...] = ()
    source: Location = _NO_SOURCE

    @property
    def effective_actions(self) -> tuple[Action, ...]:
        return self.match_actions or (Action("Post", source=self.source),)


_SYSCALL_PREFIX = re.compile(r"^(?:__x64_|__ia32_|__arm64_|__s390x_|__riscv_|__se_|__do_)?sys_")


@dataclass(frozen=True)
class Hook:
    kind: str  # "kprobe" | "tracepoint" | "lsm" | "uprobe" | "usdt"
    # kprobe: the function ("security_bprm_check", "sys_setns", "__x64_sys_setns")
    # lsm: the LSM hook name without "security_" ("bprm_check_security", "file_open")
    # tracepoint: "subsystem/event"
    # uprobe: the symbol, or the file offset in hex ("0x1139") when probed by offset
    # usdt: "provider:name"
    name: str
    subsystem: str = ""  # tracepoints only
    event: str = ""  # tracepoints only
    raw: bool = False  # tracepoints: attach as raw tracepoint (args are the TP_PROTO args)
    syscall: bool = False  # kprobes: the function is a syscall entry (syscall ABI)
    syscall_inferred: bool = False  # `syscall` was absent and was inferred from the name
    return_: bool = False  # kprobes: also hook the return ("return: true")
    args: tuple[Arg, ...] = ()
    return_arg: Arg | None = None
    return_arg_action: str = ""  # "", "Post", "TrackSock" or "UntrackSock"
    selectors: tuple[Selector, ...] = ()
    message: str = ""
    tags: tuple[str, ...] = ()
    ignore_call_not_found: bool = False  # `ignore: {callNotFound: true}`
    # kprobes on `call: "list:NAME"`: the list's name and its syscalls (without
    # prefix, "dup"); the hook covers each of them with the same args and selectors
    syscall_list: str = ""
    syscalls: tuple[str, ...] = ()
    syscalls32: tuple[str, ...] = ()   # the list's 32-bit (i386) entries, "dup"
    # policies with spec.enforcers: the policy's name, which ties NotifyEnforcer
    # notes to its enforcer (a hook of kind "enforcer", syscalls/syscalls32 its calls)
    enforcer: str = ""
    # uprobes: the binary as written in the policy, and the symbol or the file
    # offset (symbol "") probed in it
    path: str = ""
    symbol: str = ""
    offset: int = 0
    # usdts: the probe point's provider and name (path: the binary)
    provider: str = ""
    usdt_name: str = ""
    source: Location = _NO_SOURCE

    @property
    def is_exec_hook(self) -> bool:
        """True at hooks where a task is between two binaries (ARCHITECTURE.md):
        matchBinaries matches the caller OR the binary being executed there."""
        return "bprm" in self.name and not self.syscall_list

    @property
    def syscall_name(self) -> str:
        """The syscall without arch prefix ("setns" for "__x64_sys_setns"), or ""
        (also for a list hook: see `syscalls`)."""
        if not self.syscall or self.syscall_list:
            return ""
        match = _SYSCALL_PREFIX.match(self.name)
        return self.name[match.end():] if match else self.name

    @property
    def has_enforcement(self) -> bool:
        return any(a.is_enforcement for s in self.selectors
                   for a in (*s.match_actions, *s.match_return_actions))

    def arg_by_index(self, index: int) -> Arg | None:
        for arg in self.args:
            if arg.index == index:
                return arg
        return None

    def describe(self) -> str:
        if self.kind == "tracepoint":
            return f"{'raw_tracepoint' if self.raw else 'tracepoint'} {self.name}"
        if self.kind == "lsm":
            return f"lsm {self.name}"
        if self.kind == "uprobe":
            return f"uprobe {self.path}:{self.name}"
        if self.kind == "usdt":
            return f"usdt {self.path}:{self.name}"
        if self.kind == "enforcer":
            calls = [*self.syscalls, *(f"i386/{n}" for n in self.syscalls32)]
            return f"enforcer ({len(calls)} syscalls: {', '.join(calls[:4])}{', ...' if len(calls) > 4 else ''})"
        extra = []
        if self.syscall_list:
            calls = [*self.syscalls, *(f"i386/{n}" for n in self.syscalls32)]
            shown = ", ".join(calls[:4]) + (", ..." if len(calls) > 4 else "")
            extra.append(f"syscall list: {len(calls)} syscall{'s' if len(calls) != 1 else ''}"
                         f" ({shown})")
        elif self.syscall:
            extra.append("syscall" + (", inferred from name" if self.syscall_inferred else ""))
        if self.return_:
            extra.append("return")
        return f"kprobe {self.name}" + (f" ({'; '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Policy:
    name: str
    file: str
    mode: str  # "enforce" (Tetragon's default) or "monitor" (enforcement elided)
    hooks: tuple[Hook, ...]
    options: dict[str, str] = field(default_factory=dict)  # spec.options as written
    document: int = 0  # 0-based index of the YAML document in the file
    source: Location = _NO_SOURCE

    def hooks_of(self, kind: str) -> tuple[Hook, ...]:
        return tuple(h for h in self.hooks if h.kind == kind)
