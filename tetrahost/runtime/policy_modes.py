"""The control operations on a loaded policy: `tetra tracingpolicy set-mode /
enable / disable NAME`.

Each records the decision (runtime/overrides.py: it outlasts the agent) and
reloads the policy's file through the policy manager, which applies it: the
new version attaches before the old detaches, as on any reload, so a policy
switched from monitor to enforce never has a moment with neither.  Should the
reload fail (the file on disk has become invalid, a hook no longer attaches)
the decision is taken back and the running version stays as it was.
"""
from __future__ import annotations

from tetrahost.runtime.state import PolicyLoadFailed, PolicyState


class PolicyModes:
    def __init__(self, manager):
        self.manager = manager

    def set_mode(self, name: str, mode: str) -> PolicyState:
        """KeyError: no such policy; ValueError: a bad mode, or enforce for a policy
        with nothing to enforce; PolicyLoadFailed: its file did not reload."""
        state = self._loaded(name)
        if mode == "enforce" and not _can_enforce(state):
            raise ValueError(f'policy "{name}" has no enforcement action (Sigkill, Signal, Override, Set, '
                             "NotifyEnforcer): it is monitor only and cannot be set to enforce")
        return self._decide(name, mode=mode)

    def set_enabled(self, name: str, enabled: bool) -> PolicyState:
        """KeyError: no such policy; PolicyLoadFailed: its file did not reload."""
        self._loaded(name)
        return self._decide(name, enabled=enabled)

    def _loaded(self, name: str) -> PolicyState:
        state = self.manager.policies.get(name)
        if state is None:
            raise KeyError(f'no policy named "{name}" is loaded')
        return state

    def _decide(self, name: str, **decision) -> PolicyState:
        overrides = self.manager.overrides
        before = overrides.entry(name)
        overrides.set(name, **decision)
        try:
            self.manager.apply_file(self.manager.policies[name].file)
        except PolicyLoadFailed:
            overrides.put(name, before)
            raise
        return self.manager.policies[name]


def _can_enforce(state: PolicyState) -> bool:
    return any(h.kind == "enforcer" or h.has_enforcement for h in state.policy.hooks)
