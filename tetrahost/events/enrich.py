"""The one enrichment stage: a decoded kernel record -> one typed Event.

Here a record meets what user space knows: the process cache (process and
parent, container/unit), the loaded policies (which hook, policy and action a
hook record is) and the renderers that make the Event's forms (JSON line,
dict, compact line; each produced once, when a sink asks: see
tetrahost.events.event).  Network namespace and interface names and argument
slots are decoded by the hook renderer from the record's bytes.

The pipeline:  ring buffer -> decode (tetrahost.events.decode) -> enrich
(here) -> Event -> sinks (the agent hands them batches).

Under a flood of policy events most records repeat their hook, process,
selector and action: the EventMeta fields they share are kept per such group
(bounded), so a record costs one lookup and the fields that change.
"""
from __future__ import annotations

from tetrahost.events.event import Event
from tetrahost.events.meta import EventMeta, process_texts
from tetrahost.events.records import ExecRecord, ExitRecord, ForkRecord, HookRecord
from tetrahost.export.hook_json import ACTION_NAMES, EVENT_KINDS, user_actions

MAX_GROUPS = 4096
_ENFORCING = ("SIGKILL", "SIGNAL", "OVERRIDE")


class Enricher:
    def __init__(self, cache, renderer, hook_renderer, hook_for_record, dropped: dict, submit_user_action):
        """cache: the ProcessCache; renderer / hook_renderer: TetragonJSON and
        HookEventRenderer; hook_for_record(hook_id) -> HookState or None;
        dropped: the agent's counters of records not exported, by reason;
        submit_user_action(action, target): DnsLookup/GetUrl."""
        self.cache = cache
        self.renderer = renderer
        self.hook_renderer = hook_renderer
        self.hook_for_record = hook_for_record
        self.dropped = dropped
        self.submit_user_action = submit_user_action
        self._groups: dict[tuple, tuple] = {}

    def event(self, record) -> Event | None:
        """The Event of a record, or None (a fork, a record of an unknown hook)."""
        kind = type(record)
        if kind is HookRecord:
            return self._hook(record)
        # Straight to the cache's handler: one call less for each of the
        # host's execs, forks and exits.
        if kind is ExecRecord:
            ev = self.cache.handle_exec(record)
            name = "process_exec"
        elif kind is ExitRecord:
            ev = self.cache.handle_exit(record)
            if ev is None:
                return None
            name = "process_exit"
        elif kind is ForkRecord:
            self.cache.handle_fork(record)  # no event
            return None
        else:
            raise TypeError(f"not a process or hook record: {kind.__name__}")
        process = ev.process
        binary, unit, container, namespace = process_texts(process)
        r = self.renderer
        return Event(EventMeta(name, process.pid, binary, process.exec_id, ev.ktime, unit, container, namespace),
                     r.render, r.event_dict, (ev,), render_compact=r.compact_line)

    def _hook(self, record: HookRecord) -> Event | None:
        hs = self.hook_for_record(record.hook_id)
        if hs is None:      # its policy was unloaded while the record was in flight
            self.dropped["unknown_hook"] = self.dropped.get("unknown_hook", 0) + 1
            return None
        hs.events += 1
        process = self.cache.get_pid(record.pid)
        key = (id(hs), id(process), record.selector, record.action, record.monitor)
        group = self._groups.get(key)
        if group is None or group[0] is not hs or group[1] is not process:
            group = self._new_group(key, record, hs, process)
        _, _, fields, actions = group
        kind, pid, binary, exec_id, unit, container, namespace, policy, hook, action, enforced = fields
        meta = EventMeta(kind, pid if process is not None else record.pid, binary, exec_id, record.ktime,
                         unit, container, namespace, policy, hook, action, enforced)
        for user_action, target in actions:
            self.submit_user_action(user_action, target)
        r = self.hook_renderer
        return Event(meta, r.render, r.event_dict, (record, hs, process))

    def _new_group(self, key, record: HookRecord, hs, process) -> tuple:
        action = ACTION_NAMES.get(record.action, "").removeprefix("KPROBE_ACTION_")
        shown = "POST" if record.monitor else action
        enforced = not record.monitor and action in _ENFORCING
        if process is None:
            pid, binary, exec_id, unit, container, namespace = 0, "", "", "", "", ""
        else:
            pid, exec_id = process.pid, process.exec_id
            binary, unit, container, namespace = process_texts(process)
        fields = (EVENT_KINDS[hs.hook.kind], pid, binary, exec_id, unit, container, namespace,
                  hs.policy.name, hs.hook.name, shown, enforced)
        actions = () if record.monitor else tuple(user_actions(hs.hook, record))
        if len(self._groups) >= MAX_GROUPS:
            self._groups.clear()
        group = self._groups[key] = (hs, process, fields, actions)
        return group
