"""Loaded TracingPolicies and the kernel hooks that enforce them.

Each policy file is validated as a whole (a broken file loads nothing and
says why); each hook of a valid policy is then compiled, planned and attached
on its own: a hook the kernel cannot honour is reported with the reason while
the policy's other hooks, and every other policy, keep working.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from tetrahost.bpf import BpfError
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy.compile import CompiledHook, CompileError, compile_hook
from tetrahost.policy.load import load_path
from tetrahost.policy.model import Hook, Policy
from tetrahost.sensors.attach import AttachError, AttachPlan, plan_attach
from tetrahost.sensors.generic import HookSensor

log = logging.getLogger(__name__)


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

    @property
    def state(self) -> str:
        active = sum(h.active for h in self.hooks)
        if active == len(self.hooks):
            return "monitoring" if self.policy.mode == "monitor" else "enforcing"
        return "partial" if active else "error"


class PolicyLoadFailed(Exception):
    def __init__(self, file: str, messages: list[str]):
        self.file = file
        self.messages = messages
        super().__init__(f"{file}: policy rejected:\n  " + "\n  ".join(messages))


class PolicyManager:
    def __init__(self, features, host_ns: HostNamespaces, shared_maps: dict):
        self.features = features
        self.host_ns = host_ns
        self.shared_maps = shared_maps
        self.policies: dict[str, PolicyState] = {}
        self.hooks: dict[int, HookState] = {}
        self._ids = itertools.count(1)

    def load_file(self, path: str) -> list[PolicyState]:
        """Validate and attach every policy of a file; PolicyLoadFailed if the file is invalid."""
        result = load_path(path)
        if not result.ok:
            raise PolicyLoadFailed(path, [e.render() for e in result.errors])
        for w in result.warnings:
            log.warning("%s", w.render())
        dupes = [p.name for p in result.policies if p.name in self.policies]
        if dupes:
            raise PolicyLoadFailed(path, [f"policy {n!r} is already loaded from {self.policies[n].policy.file}"
                                          for n in dupes])
        return [self._start_policy(p) for p in result.policies]

    def _start_policy(self, policy: Policy) -> PolicyState:
        state = PolicyState(policy)
        for hook in policy.hooks:
            hs = HookState(next(self._ids), policy, hook)
            state.hooks.append(hs)
            self.hooks[hs.hook_id] = hs
            try:
                hs.compiled = compile_hook(hook, hs.hook_id, self.host_ns, monitor=policy.mode == "monitor")
                enforcing = policy.mode != "monitor"   # monitor: no need for a hook that can enforce
                hs.plan = plan_attach(hook, self.features, enforcing and hs.compiled.uses_enforcement,
                                      enforcing and hs.compiled.uses_override)
                hs.sensor = HookSensor(hs.compiled, hs.plan, self.shared_maps).start()
            except (CompileError, AttachError, BpfError) as exc:
                hs.error = str(exc).split("\n")[0] if isinstance(exc, BpfError) else str(exc)
                log.error("policy %s (%s): %s not active: %s", policy.name, policy.file, hook.describe(), hs.error)
                if isinstance(exc, BpfError) and exc.log:
                    log.debug("verifier log:\n%s", exc.full_log)
            else:
                log.info("policy %s: %s", policy.name, hs.describe())
        self.policies[policy.name] = state
        return state

    def unload(self, name: str) -> None:
        state = self.policies.pop(name)
        for hs in state.hooks:
            if hs.sensor is not None:
                hs.sensor.stop()
            self.hooks.pop(hs.hook_id, None)

    def stop_all(self) -> None:
        for name in list(self.policies):
            self.unload(name)
