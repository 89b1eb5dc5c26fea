"""What selector validation needs to know about the hook a selector belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Arg


@dataclass
class HookShape:
    """What selector validation needs to know about the hook it belongs to."""

    kind: str  # kprobe | tracepoint | lsm
    name: str
    # Arguments by the number matchArgs uses to name them: the function argument
    # index for kprobes and LSM hooks; the position in `args` for tracepoints
    # (Tetragon's tracepoint examples filter args[0] with index 0 whatever its
    # format-field index).
    args: dict[int, Arg] = field(default_factory=dict)
    positions: dict[int, int] = field(default_factory=dict)  # same key -> position in Hook.args
    rejected: set[int] = field(default_factory=set)  # keys of args that failed validation
    return_: bool = False
    return_arg: Arg | None = None
    is_exec_hook: bool = False
    lists: dict = field(default_factory=dict)  # spec.lists by name (SyscallList, None: unusable)
    has_enforcer: bool = False  # the policy has spec.enforcers (NotifyEnforcer needs one)
