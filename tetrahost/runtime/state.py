"""What the policy manager keeps of each loaded policy and hook, and the
error a rejected load raises.  Plain records: the status snapshot, the
exporters (a record's hook) and the adoption of pinned hooks read them."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from tetrahost.policy.compiled import CompiledHook
from tetrahost.policy.model import Hook, Policy
from tetrahost.sensors.attach import AttachPlan
from tetrahost.sensors.generic import HookSensor


@dataclass
class Limits:
    """limits.* of the configuration (tetrahost/config.py has the defaults' reasons)."""
    max_hooks_per_policy: int = 64
    max_hooks_total: int = 512


@dataclass
class HookState:
    hook_id: int
    policy: Policy
    hook: Hook
    compiled: CompiledHook | None = None
    plan: AttachPlan | None = None
    sensor: HookSensor | None = None
    error: str = ""
    events: int = 0
    retired_at: float | None = None      # monotonic time it was detached by a replace/unload
    proc_bits: list[int] | None = None   # holds the per-process state (ProcState.acquire)
    follow_bits: dict[int, int] = field(default_factory=dict)   # selector -> its followChildren bit
    retries: int = 0                     # failed attempts for want of fds/memory
    retry_at: float | None = None        # monotonic time of the next attempt (None: not retried)
    origin: str = "fresh"                # "adopted": taken over, as it ran, from a previous agent's pins
    pinned: bool = False                 # its links are pinned (it survives the agent)
    fallback_from: list[str] = field(default_factory=list)   # better methods that failed, with why
    # CLOCK_BOOTTIME ns (the records' clock) once attached: a replaced
    # generation's record of this hook from then on is one this hook wrote too
    attached_ns: int = 0
    reattached: int = 0                  # uprobe/USDT: times it followed its replaced binary (binwatch)
    binary_changed_at: float | None = None   # wall time its binary last changed (re-attached or not)

    @property
    def active(self) -> bool:
        return self.sensor is not None

    def describe(self) -> str:
        where = f"{self.hook.describe()}"
        return f"{where}: {self.plan.method}" if self.active else f"{where}: NOT ACTIVE: {self.error}"


@dataclass
class PolicyState:
    policy: Policy
    hooks: list[HookState] = field(default_factory=list)
    generation: int = 1                  # 1 + number of successful replaces
    loaded_at: float = field(default_factory=time.time)
    digest: str = ""                     # sha256 of the file content it came from
    disabled: bool = False               # `tetra tracingpolicy disable`: listed, nothing attached

    @property
    def state(self) -> str:
        if self.disabled:
            return "disabled"
        active = sum(h.active for h in self.hooks)
        if active == len(self.hooks):
            return "monitoring" if self.policy.mode == "monitor" else "enforcing"
        return "partial" if active else "error"

    @property
    def file(self) -> str:
        return self.policy.file


class PolicyLoadFailed(Exception):
    def __init__(self, file: str, messages: list[str], name_conflict: bool = False, retryable: bool = False):
        """name_conflict: rejected because another file owns a policy name (the
        policy directory retries such a file when the owner goes away);
        retryable: failed for want of fds or memory (worth trying again later)."""
        self.file = file
        self.messages = messages
        self.name_conflict = name_conflict
        self.retryable = retryable
        super().__init__(f"{file}: policy rejected:\n  " + "\n  ".join(messages))


@dataclass
class ReloadCounters:
    ok: int = 0          # files applied (first load or replace)
    failed: int = 0      # files rejected or rolled back (the old version, if any, kept)
    unloads: int = 0


def describe_policies(policies: dict[str, PolicyState]) -> list[dict]:
    """Plain data of loaded policies and their hooks, by name (status, tracingpolicy list)."""
    out = []
    for name, s in sorted(policies.items()):
        out.append({
            "name": name, "file": os.fspath(s.file), "state": s.state, "mode": s.policy.mode,
            "generation": s.generation, "loaded_at": s.loaded_at,
            "events": sum(h.events for h in s.hooks),
            "hooks": [{"id": h.hook_id, "hook": h.hook.describe(), "active": h.active,
                       "attach": h.plan.method if h.plan is not None and h.active else "",
                       "error": h.error, "events": h.events, "origin": h.origin,
                       "pinned": h.pinned, "retrying": h.retry_at is not None,
                       "fallback_from": h.fallback_from if h.active else [],
                       "reattached": h.reattached, "binary_changed_at": h.binary_changed_at} for h in s.hooks],
        })
    return out
