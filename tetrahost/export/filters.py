"""Export filters, field filters and the export rate limit, in front of every event exporter.

Allow/deny lists use Tetragon's filter syntax (exportAllowList/exportDenyList):
a list of filters; within one filter every key given must match (AND), a key
matches when any of its values does (OR); an event is exported when it
matches some allow filter (or there is no allow list) and no deny filter.
The keys are the subset of Tetragon's Filter that EventMeta can answer
without parsing the event:

  event_set     ["PROCESS_EXEC", "PROCESS_EXIT", "PROCESS_KPROBE", "PROCESS_LSM"]
  binary_regex  regular expressions searched in the process binary (Go MatchString semantics)
  pid           process ids
  policy_names  TracingPolicy names (hook events)
  namespace     the workload namespace (EventMeta.workload_namespace; "" = none)
  unit          systemd unit of the process's cgroup, exact names (tetrahost extension)

Tetragon's pid_set, arguments_regex, parent_binary_regex, labels, ... need
data EventMeta does not carry and are rejected as unknown keys, not ignored.
This module checks these keys; what a parsed filter matches is defined by
EventMatcher (tetrahost/events/matcher.py), shared with `tetra getevents`.

Field filters: `drop_process_fields` removes keys from the "process" and
"parent" objects of every event (a simple form of Tetragon's fieldFilters with
action EXCLUDE on process.*), working on the Event's dict form (made by the
renderers, not parsed from its line) and encoding the result: a new Event per
exported event, so it is only done when configured.

Rate limit: events per minute over all exporters (Tetragon's exportRateLimit),
a token bucket refilled continuously.  Dropped events are reported, as
Tetragon does, by a rate_limit_info line through the same exporters once per
report interval in which something was dropped.
"""
from __future__ import annotations

import json
import logging
import re
import time

from tetrahost.events.event import Event, metas_of
from tetrahost.events.matcher import EventMatcher
from tetrahost.events.meta import EventMeta
from tetrahost.export.encode import dumps

log = logging.getLogger(__name__)

EVENT_TYPES = ("PROCESS_EXEC", "PROCESS_EXIT", "PROCESS_KPROBE", "PROCESS_LSM", "PROCESS_TRACEPOINT")
FILTER_KEYS = ("event_set", "binary_regex", "pid", "policy_names", "namespace", "unit")
# keys whose values are names compared exactly -> the EventMatcher condition they fill
_NAME_KEYS = {"policy_names": "policies", "namespace": "namespaces", "unit": "units"}
PROCESS_FIELDS = frozenset((
    "exec_id", "pid", "uid", "cwd", "binary", "arguments", "flags", "start_time", "auid", "docker",
    "parent_exec_id", "cap", "ns", "tid", "process_credentials", "refcnt",
    # no longer in "process" (they are host fields now): still accepted, so older configurations load
    "cgroup", "unit", "slice", "workload_namespace", "container"))


class FilterError(ValueError):
    pass


def parse_filter(spec: dict, where: str = "") -> EventMatcher:
    """One Tetragon filter (every key present must match) as an EventMatcher
    (tetrahost/events/matcher.py, shared with `tetra getevents`); FilterError
    names the key, prefixed with `where`, for anything it cannot honour."""
    conditions = {}
    for key, values in spec.items():
        path = f"{where}{key}"
        if key not in FILTER_KEYS:
            raise FilterError(f"{path}: unknown filter key (supported: {', '.join(FILTER_KEYS)})")
        if not isinstance(values, list) or not values:
            raise FilterError(f"{path}: expected a non-empty list, got {values!r}")
        if key == "event_set":
            bad = [v for v in values if v not in EVENT_TYPES]
            if bad:
                raise FilterError(f"{path}: unknown event type(s) {bad} (known: {', '.join(EVENT_TYPES)})")
            conditions["kinds"] = frozenset(v.lower() for v in values)
        elif key == "binary_regex":
            try:
                rx = re.compile("|".join(f"(?:{v})" for v in values))
            except (re.error, TypeError) as exc:
                raise FilterError(f"{path}: bad regular expression: {exc}") from None
            conditions["binary"] = (rx,)
        elif key == "pid":
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
                raise FilterError(f"{path}: expected process ids (integers), got {values!r}")
            conditions["pids"] = frozenset(values)
        else:
            if not all(isinstance(v, str) for v in values):
                raise FilterError(f"{path}: expected strings, got {values!r}")
            conditions[_NAME_KEYS[key]] = frozenset(values)
    if not conditions:
        raise FilterError(f"{where.rstrip('.') or 'filter'}: empty filter (it would match everything)")
    return EventMatcher(**conditions)


def parse_filter_list(value, where: str = "") -> list[EventMatcher]:
    """Filters from a list of tables (TOML) or Tetragon's form: a string of JSON objects, one per line."""
    if isinstance(value, str):
        specs = []
        for n, line in enumerate(value.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                spec = json.loads(line)
            except ValueError as exc:
                raise FilterError(f"line {n}: not a JSON object: {exc}") from None
            if not isinstance(spec, dict):
                raise FilterError(f"line {n}: not a JSON object: {line}")
            specs.append(spec)
    elif isinstance(value, list):
        specs = value
    else:
        raise FilterError(f"expected a list of filters, got {value!r}")
    return [parse_filter(spec, f"{where}[{i}].") for i, spec in enumerate(specs)]


def drop_fields(item, fields: frozenset) -> Event:
    """The event without `fields` in its process and parent objects (copies:
    the renderers' dicts share sub-objects)."""
    if type(item) is Event:
        data, meta = item.data, item.meta
    else:                       # a (line, meta) pair from outside the agent
        data, meta = json.loads(item[0]), item[1]
    out = {}
    for name, body in data.items():
        if isinstance(body, dict) and ("process" in body or "parent" in body):
            body = dict(body)
            for key in ("process", "parent"):
                obj = body.get(key)
                if isinstance(obj, dict):
                    body[key] = {k: v for k, v in obj.items() if k not in fields}
        out[name] = body
    return Event(meta, json=dumps(out), data=out)


class RateLimiter:
    """Token bucket of `per_minute` events, refilled continuously."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.clock = clock
        self._last = clock()

    def allow(self, n: int) -> int:
        """How many of n events may pass now."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        ok = min(n, int(self.tokens))
        self.tokens -= ok
        return ok


class ExportPipeline:
    """Filters, field filters and rate limit once, then every exporter gets the result.

    Also a component (start/stop) so the agent's loop drives the periodic
    rate_limit_info report even when no more events arrive."""

    name = "export-pipeline"

    def __init__(self, sinks, *, allow=(), deny=(), drop_process_fields=(), rate_limit: int = -1,
                 node_name: str = "", report_interval: float = 60.0, clock=time.monotonic):
        self.sinks = list(sinks)
        self.allow = list(allow)
        self.deny = list(deny)
        self.fields = frozenset(drop_process_fields)
        self.limiter = RateLimiter(rate_limit, clock) if rate_limit >= 0 else None
        self.node_name = node_name
        self.report_interval = report_interval
        self.filtered = 0           # events removed by allow/deny lists
        self.rate_limited = 0       # events dropped by the rate limit, total
        self._unreported = 0

    def _keep(self, meta: EventMeta) -> bool:
        if self.allow and not any(f.matches(meta) for f in self.allow):
            return False
        return not any(f.matches(meta) for f in self.deny)

    def write_events(self, batch) -> None:
        if self.allow or self.deny:
            kept = [item for item, meta in zip(batch, metas_of(batch)) if self._keep(meta)]
            self.filtered += len(batch) - len(kept)
            batch = kept
        if self.limiter is not None and batch:
            ok = self.limiter.allow(len(batch))
            if ok < len(batch):
                self.rate_limited += len(batch) - ok
                self._unreported += len(batch) - ok
                batch = batch[:ok]
        if self.fields and batch:
            batch = [drop_fields(item, self.fields) for item in batch]
        if batch:
            self._deliver(batch)

    def _deliver(self, batch) -> None:
        for sink in self.sinks:
            try:
                sink.write_events(batch)
            except Exception:   # one failing exporter must not starve the others
                log.exception("exporter %s failed", getattr(sink, "name", sink))

    def report(self) -> None:
        """Emit rate_limit_info for drops since the last report (Tetragon's event shape)."""
        if not self._unreported:
            return
        n, self._unreported = self._unreported, 0
        log.warning("export rate limit: %d events dropped", n)
        now = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 1_000_000_000))
        # uint64: a JSON string in protobuf's JSON mapping, as Tetragon writes it
        data = {"rate_limit_info": {"number_of_dropped_process_events": str(n)},
                "node_name": self.node_name, "time": f"{stamp}.{now % 1_000_000_000:09d}Z"}
        meta = EventMeta(kind="rate_limit_info", pid=0, binary="", exec_id="", ktime=0)
        self._deliver([Event(meta, json=dumps(data), data=data)])

    # -- component -----------------------------------------------------------------
    def start(self, services) -> None:
        if not self.node_name:
            self.node_name = services.node_name
        if self.limiter is not None:
            services.loop.add_timer(self.report_interval, self.report)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.report()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing exporter %s failed", getattr(sink, "name", sink))
