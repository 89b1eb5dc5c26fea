"""Does an event match a filter?  Decided on EventMeta alone, never on the JSON.

One matcher serves both filter front-ends, which differ only in how a user
spells a filter:

  tetrahost/control/filters.py   `tetra getevents` flags, sent over the control socket
  tetrahost/export/filters.py    export allow/deny lists of the configuration (Tetragon's keys)

Each parser checks its own keys and reports errors in its own terms; what a
parsed filter means is defined once, here.  Every condition given must hold
(AND); a condition with several values holds when any value does (OR).  A
condition left at its default is not checked; a condition given as an empty
set matches nothing (`--process-only --event-types PROCESS_KPROBE` selects no
event, it does not fall back to all of them).

Matching runs on the agent's event loop for every event, so conditions are
plain set lookups and precompiled patterns.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class EventMatcher:
    kinds: frozenset[str] | None = None          # EventMeta.kind: "process_exec", "process_kprobe", ...
    binary: tuple[re.Pattern, ...] = ()          # searched anywhere in the binary path
    pids: frozenset[int] | None = None
    policies: frozenset[str] | None = None       # policy names (exec/exit events have none)
    namespaces: frozenset[str] | None = None     # EventMeta.workload_namespace ("" = none)
    # One condition on the unit, given as exact names, shell globs, or both:
    # the unit matches when it is one of the names or matches one of the globs.
    units: frozenset[str] | None = None
    unit_globs: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()             # container id prefixes (an event without one never matches)

    def matches(self, meta) -> bool:
        if self.kinds is not None and meta.kind not in self.kinds:
            return False
        if self.pids is not None and meta.pid not in self.pids:
            return False
        if self.policies is not None and meta.policy not in self.policies:
            return False
        if self.namespaces is not None and meta.workload_namespace not in self.namespaces:
            return False
        if self.binary and not any(p.search(meta.binary) for p in self.binary):
            return False
        if (self.units is not None or self.unit_globs) and not self._unit_matches(meta.unit):
            return False
        if self.containers and not (meta.container and meta.container.startswith(self.containers)):
            return False
        return True

    def _unit_matches(self, unit: str) -> bool:
        if self.units is not None and unit in self.units:
            return True
        return any(fnmatch.fnmatchcase(unit, g) for g in self.unit_globs)
