"""What compiling a policy hook produces, and the pieces every part of the
compiler shares: the error type, the string sets and address prefixes a
hook's selectors put into its maps.  See tetrahost.policy.compile.

Plain data only: the sensor side packs it for the kernel."""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

from tetrahost import constants as abi
from tetrahost.policy.errors import PolicyError
from tetrahost.policy.hookconfig import NO_ARG, HookConfig
from tetrahost.policy.model import Hook, PathValue, PortRange

STR_MAX = abi.TH_STR_MAX
SOCK_ARG_KINDS = (abi.TH_ARG_SOCK, abi.TH_ARG_SOCKET)


class CompileError(ValueError):
    """What the kernel side cannot hold or evaluate.  str() is the message
    relative to the hook, its field first ("selectors[0].matchPIDs: 5
    entries; ..."); compile_hook adds `error`, the same as the validator's
    PolicyError: `file:line: spec.kprobes[0].selectors[0].matchPIDs: 5 entries...`."""

    error: PolicyError | None = None

    def render(self) -> str:
        return self.error.render() if self.error is not None else str(self)


# the field a compile message starts with: a hook's selectors, args or return
_FIELD = re.compile(r"^((?:selectors\[\d+\]|args\[\d+\]|returnArgAction|returnArg)(?:\.\w+(?:\[\d+\])?)*)(?::\s*|\s+)")
# policy field names -> model attributes, where they differ by more than case
_ATTRS = {"matchPIDs": "match_pids", "returnArg": "return_arg"}


def locate(hook: Hook, exc: CompileError) -> PolicyError:
    """exc as the validator reports a problem: the file, the line of the
    deepest element of the hook its field names, the full field path."""
    text = str(exc)
    m = _FIELD.match(text)
    field_path, message = (m[1], text[m.end():]) if m else ("", text)
    node, line = hook, hook.source.line
    for part in field_path.split(".") if field_path else ():
        name, _, index = part.partition("[")
        attr = _ATTRS.get(name) or re.sub(r"(?<!^)([A-Z])", lambda c: "_" + c[1].lower(), name)
        node = getattr(node, attr, None)
        if index and isinstance(node, (tuple, list)):
            i = int(index.rstrip("]"))
            node = node[i] if i < len(node) else None
        source = getattr(node, "source", None)
        if source is None or not source.line:
            break
        line = source.line
    path = ".".join(p for p in (hook.source.path, field_path) if p)
    return PolicyError(hook.source.file, line, path, message or text, code="kernel-side")


class KernelUnreadable(CompileError):
    """What compiling needed to read from this system was not readable here
    (a tracepoint's format in tracefs, root only): says nothing of the policy."""


@dataclass
class CompiledHook:
    hook: Hook
    config: HookConfig                  # what the kernel side reads (struct th_hook_config)
    str_equal: list[tuple[int, bytes]] = field(default_factory=list)   # (set_id, value)
    str_prefix: list[tuple[int, bytes]] = field(default_factory=list)
    str_postfix: list[tuple[int, bytes]] = field(default_factory=list)  # as written, reversed when loaded
    int_set: list[tuple[int, int]] = field(default_factory=list)       # (set_id, int64 value): InMap
    arg_kinds: list[int] = field(default_factory=list)                 # per hook arg, enum th_arg_kind
    # matchBinaries followChildren: (selector index, executable paths).  The
    # policy manager gives each a bit of the process sensor's follow_bins and
    # sets selectors[i].bin_follow (compiling has no side effects).
    follow: list[tuple[int, tuple[bytes, ...]]] = field(default_factory=list)

    @property
    def needs_proc_state(self) -> bool:
        """A selector needs the process sensor's per-process state (proc_state):
        followChildren, or capability/namespace changes."""
        sels = [self.config.selectors[i] for i in range(self.config.nselectors)]
        return bool(self.follow) or any(s.capch_kind or s.nsch_mask for s in sels)

    @property
    def needs_stacks(self) -> bool:
        """A selector's Post asks for stack traces: the hook's stack_traces map
        gets TH_STACK_ENTRIES entries (one otherwise)."""
        return any(self.config.selectors[i].stack_traces for i in range(self.config.nselectors))

    def _actions(self) -> set[int]:
        return {self.config.selectors[i].action for i in range(self.config.nselectors)}

    @property
    def uses_enforcement(self) -> bool:
        return bool(self._actions() & {abi.TH_ACTION_SIGKILL, abi.TH_ACTION_SIGNAL, abi.TH_ACTION_OVERRIDE,
                                       abi.TH_ACTION_SET, abi.TH_ACTION_NOTIFY_ENFORCER})

    @property
    def uses_set(self) -> bool:
        """USDT Set: the program that writes user memory is needed."""
        return abi.TH_ACTION_SET in self._actions()

    @property
    def uses_override(self) -> bool:
        return abi.TH_ACTION_OVERRIDE in self._actions()


class Cidrs:
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
        if i >= abi.TH_MAX_CIDRS:
            raise CompileError(f"{where}: more than {abi.TH_MAX_CIDRS} different address prefixes "
                               "in one hook, the most the kernel side holds")
        c = self.cfg.cidrs[i]
        c.family = family
        c.prefixlen = net.prefixlen
        c.addr = net.network_address.packed.ljust(16, b"\0")
        c.mask = net.netmask.packed.ljust(16, b"\0")
        self.index[key] = i
        self.cfg.ncidrs = i + 1
        return i


def port_range_value(r: PortRange) -> int:
    """A SPort/DPort value as the kernel side reads it: low | high << 16."""
    return r.low | r.high << 16


class StringSets:
    def __init__(self, out: CompiledHook):
        self.out = out
        self.next_id = 1
        self.cidrs = Cidrs(out.config)

    def add_ints(self, values, where: str) -> int:
        """An InMap set: every integer of `values` (IntRange) under one set_id."""
        set_id, self.next_id = self.next_id, self.next_id + 1
        ints = {v for r in values for v in range(r.low, r.high + 1)}
        if len(self.out.int_set) + len(ints) > abi.TH_INT_SET_ENTRIES:
            raise CompileError(f"{where}: more than {abi.TH_INT_SET_ENTRIES} InMap integers in one hook, "
                               "the most its int_set map holds")
        self.out.int_set.extend((set_id, v) for v in sorted(ints))
        return set_id

    def add(self, op: int, values: list[bytes], where: str) -> int:
        set_id, self.next_id = self.next_id, self.next_id + 1
        target = {abi.TH_MATCH_PREFIX: self.out.str_prefix,
                  abi.TH_MATCH_POSTFIX: self.out.str_postfix}.get(op, self.out.str_equal)
        for v in values:
            if len(v) > STR_MAX:
                raise CompileError(f"{where}: value {v[:40]!r}... is longer than {STR_MAX} bytes, "
                                   "the longest string matched in the kernel")
            target.append((set_id, v))
        return set_id


def value_bytes(v) -> bytes:
    if isinstance(v, PathValue):
        return v.canonical.encode()
    return str(v).encode()
