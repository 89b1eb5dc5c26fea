"""Event filters of `getevents`, evaluated in the agent on EventMeta.

All given fields must match (AND); a field with several values matches when
any value does (OR).  Nothing is parsed from the rendered JSON: EventMeta is
built once per event for exactly this, so an unmatched event costs a few
attribute compares and is never sent.

  event_types    Tetragon names ("PROCESS_EXEC") or EventMeta kinds ("process_exec")
  process_only   exec and exit events only
  binary         regular expressions searched in the process's binary path
  pids           process ids
  policy_names   policy names (hook events; exec/exit never match)
  units          systemd unit names; shell globs allowed ("nginx*")
  containers     container id or id prefix (ids are long; `docker ps` shows 12 chars)
  namespaces     workload namespace: the container runtime ("docker", "podman", ...) for
                 a container, else the top-level systemd slice ("system.slice", "user.slice",
                 "-.slice" for the root cgroup); see tetrahost/events/cgroups.py
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from tetrahost.control.protocol import ProtocolError

PROCESS_KINDS = frozenset({"process_exec", "process_exit"})
KNOWN_KINDS = frozenset({"process_exec", "process_exit", "process_kprobe", "process_lsm",
                         "process_tracepoint", "process_uprobe"})
FIELDS = ("event_types", "process_only", "binary", "pids", "policy_names", "units", "containers", "namespaces")


@dataclass(frozen=True)
class EventFilter:
    kinds: frozenset[str] | None = None
    binary: tuple[re.Pattern, ...] = ()
    pids: frozenset[int] | None = None
    policy_names: frozenset[str] | None = None
    units: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    namespaces: frozenset[str] | None = None

    def matches(self, meta) -> bool:
        if self.kinds is not None and meta.kind not in self.kinds:
            return False
        if self.pids is not None and meta.pid not in self.pids:
            return False
        if self.policy_names is not None and meta.policy not in self.policy_names:
            return False
        if self.namespaces is not None and meta.workload_namespace not in self.namespaces:
            return False
        if self.binary and not any(p.search(meta.binary) for p in self.binary):
            return False
        if self.units and not any(fnmatch.fnmatchcase(meta.unit, u) for u in self.units):
            return False
        if self.containers and not (meta.container and any(meta.container.startswith(c) for c in self.containers)):
            return False
        return True

    @property
    def empty(self) -> bool:
        return self == EventFilter()


def _strings(spec: dict, key: str) -> list[str]:
    value = spec.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProtocolError(f"filter {key}: expected a list of non-empty strings")
    return value


def parse_filter(spec: dict | None) -> EventFilter:
    """EventFilter from the request's "filter" object; ProtocolError for anything unclear."""
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ProtocolError("filter: expected an object")
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise ProtocolError(f"filter: unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(FIELDS)})")
    kinds = None
    types = _strings(spec, "event_types")
    if types:
        kinds = frozenset(t.lower() for t in types)
        bad = kinds - KNOWN_KINDS
        if bad:
            raise ProtocolError(f"filter event_types: unknown {', '.join(sorted(b.upper() for b in bad))} "
                                f"(known: {', '.join(sorted(k.upper() for k in KNOWN_KINDS))})")
    if spec.get("process_only"):
        kinds = PROCESS_KINDS if kinds is None else kinds & PROCESS_KINDS
    try:
        binary = tuple(re.compile(b) for b in _strings(spec, "binary"))
    except re.error as exc:
        raise ProtocolError(f"filter binary: bad regular expression: {exc}") from None
    pids = spec.get("pids")
    if pids is not None:
        if not isinstance(pids, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in pids):
            raise ProtocolError("filter pids: expected a list of integers")
        pids = frozenset(pids)
    policies = _strings(spec, "policy_names")
    namespaces = _strings(spec, "namespaces")
    return EventFilter(kinds=kinds, binary=binary, pids=pids,
                       policy_names=frozenset(policies) if policies else None,
                       units=tuple(_strings(spec, "units")),
                       containers=tuple(c.lower() for c in _strings(spec, "containers")),
                       namespaces=frozenset(namespaces) if namespaces else None)
