"""Event filters of `getevents`, evaluated in the agent on EventMeta.

All given fields must match (AND); a field with several values matches when
any value does (OR).  This module only turns the request's "filter" object
into an EventMatcher (tetrahost/events/matcher.py, shared with the export
allow/deny lists); nothing is parsed from the rendered JSON, so an unmatched
event costs a few attribute compares and is never sent.

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

import re

from tetrahost.control.protocol import ProtocolError
from tetrahost.events.matcher import EventMatcher

PROCESS_KINDS = frozenset({"process_exec", "process_exit"})
KNOWN_KINDS = frozenset({"process_exec", "process_exit", "process_kprobe", "process_lsm",
                         "process_tracepoint", "process_uprobe", "process_usdt"})
FIELDS = ("event_types", "process_only", "binary", "pids", "policy_names", "units", "containers", "namespaces")


def _strings(spec: dict, key: str) -> list[str]:
    value = spec.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProtocolError(f"filter {key}: expected a list of non-empty strings")
    return value


def parse_filter(spec: dict | None) -> EventMatcher:
    """EventMatcher from the request's "filter" object; ProtocolError for anything unclear."""
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
    return EventMatcher(kinds=kinds, binary=binary, pids=pids,
                        policies=frozenset(policies) if policies else None,
                        unit_globs=tuple(_strings(spec, "units")),
                        containers=tuple(c.lower() for c in _strings(spec, "containers")),
                        namespaces=frozenset(namespaces) if namespaces else None)
