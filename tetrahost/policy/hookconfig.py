"""What one compiled hook asks of the kernel side, as plain data.

These dataclasses mirror `struct th_hook_config` of csrc/events.h field for
field (same names, arrays as lists of the array's length), so the policy
front end needs neither the compiled extension nor the kernel: the sensor
side packs a HookConfig into the C struct (tetrahost/sensors/hook_config.py),
adding what only the attach plan knows (syscall sets, the dispatcher slot,
USDT argument locations, followChildren bits, flags that depend on the
program chosen).  Those fields are deliberately absent here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tetrahost.constants import (TH_MAX_ARGS, TH_MAX_CIDRS, TH_MAX_INT_VALUES, TH_MAX_MATCH_ARGS, TH_MAX_NS_MATCH,
                                 TH_MAX_PID_MATCH, TH_MAX_PID_VALUES, TH_MAX_RESOLVE_STEPS, TH_MAX_SELECTORS, TH_NO_ARG)

NO_ARG = TH_NO_ARG    # exec_target_arg / ret_copy_arg: no such argument


def _zeros(n: int):
    return field(default_factory=lambda: [0] * n)


def _each(cls, n: int):
    return field(default_factory=lambda: [cls() for _ in range(n)])


@dataclass
class ArgMatcher:                       # struct th_arg_matcher
    arg: int = 0
    op: int = 0
    negate: int = 0
    nvalues: int = 0
    set_id: int = 0
    values: list[int] = _zeros(TH_MAX_INT_VALUES)


@dataclass
class NsMatcher:                        # struct th_ns_matcher
    kind: int = 0
    negate: int = 0
    nvalues: int = 0
    inums: list[int] = _zeros(TH_MAX_INT_VALUES)


@dataclass
class PidMatcher:                       # struct th_pid_matcher
    negate: int = 0
    flags: int = 0
    nvalues: int = 0
    pids: list[int] = _zeros(TH_MAX_PID_VALUES)


@dataclass
class SelectorConfig:                   # struct th_selector (bin_follow: given at load)
    nargs: int = 0
    nns: int = 0
    bin_op: int = 0
    bin_negate: int = 0
    bin_set_id: int = 0
    npids: int = 0
    bin_follow: int = 0
    caps_kind: int = 0
    caps_negate: int = 0
    action: int = 0
    rate_scope: int = 0
    no_post: int = 0
    capch_kind: int = 0
    capch_negate: int = 0
    action_arg: int = 0
    caps_mask: int = 0
    rate_limit_ns: int = 0
    caps_userns: int = 0
    capch_userns: int = 0
    capch_mask: int = 0
    nsch_mask: int = 0
    stack_traces: int = 0
    ima_hash: int = 0
    notify_error: int = 0
    set_value: int = 0
    pids: list[PidMatcher] = _each(PidMatcher, TH_MAX_PID_MATCH)
    args: list[ArgMatcher] = _each(ArgMatcher, TH_MAX_MATCH_ARGS)
    ns: list[NsMatcher] = _each(NsMatcher, TH_MAX_NS_MATCH)


@dataclass
class Cidr:                             # struct th_cidr
    family: int = 0
    prefixlen: int = 0
    addr: bytes = bytes(16)
    mask: bytes = bytes(16)


@dataclass
class Resolve:                          # struct th_resolve
    active: int = 0
    nloads: int = 0
    last_size: int = 0
    last_signed: int = 0
    last_offset: int = 0
    loads: list[int] = _zeros(TH_MAX_RESOLVE_STEPS)


@dataclass
class HookConfig:                       # struct th_hook_config, less what the attach plan gives
    hook_id: int = 0
    nselectors: int = 0
    monitor: int = 0
    arg_kind: list[int] = _zeros(TH_MAX_ARGS)
    arg_src: list[int] = _zeros(TH_MAX_ARGS)
    exec_target_arg: int = NO_ARG
    flags: int = 0
    arg_offset: list[int] = _zeros(TH_MAX_ARGS)
    arg_field: list[int] = _zeros(TH_MAX_ARGS)
    ncidrs: int = 0
    ret_size: int = 0
    ret_signed: int = 0
    ret_copy_arg: int = NO_ARG
    ret_kind: int = 0
    ret_action: int = 0
    enforcer_id: int = 0
    selectors: list[SelectorConfig] = _each(SelectorConfig, TH_MAX_SELECTORS)
    ret_match: list[ArgMatcher] = _each(ArgMatcher, TH_MAX_SELECTORS)
    cidrs: list[Cidr] = _each(Cidr, TH_MAX_CIDRS)
    resolve: list[Resolve] = _each(Resolve, TH_MAX_ARGS)

# The fields of struct th_hook_config a HookConfig leaves out: the attach
# plan's (tetrahost/sensors/hook_config.py fills them) and padding.
ATTACH_FIELDS = ("dispatch_slot", "syscall_set", "syscall_set32", "usdt_args")
