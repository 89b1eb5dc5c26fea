"""Prometheus metrics at http://ADDRESS/metrics (default :2112), Tetragon's names plus agent health.

  tetragon_events_total{type}                   events by type (PROCESS_EXEC, PROCESS_KPROBE, ...)
  tetragon_policy_events_total{policy,hook,action}
  tetragon_process_exec_total
  tetragon_missed_events_total{type}            records the kernel dropped (ring buffer full),
                                                from the in-kernel loss counters
  tetrahost_ringbuf_records_total               records read from the ring buffer
  tetrahost_ringbuf_lost_total                  all in-kernel losses
  tetrahost_decode_errors_total
  tetrahost_ringbuf_released_unwritten_total     ring space released before a stalled exporter wrote
                                                (export/delivery.py: only these a crash can lose)
  tetrahost_ringbuf_paused_total                loop turns that left the ring buffer unread because an
                                                exporter's queue was full (back-pressure, export/delivery.py)
  tetrahost_ringbuf_overruns_total              loop turns that read on although an exporter was full: the
                                                ring was filling (that exporter dropped the batch, counted)
  tetrahost_records_dropped_total{reason}       records read but not exported: unknown_hook (policy
                                                unloaded meanwhile), replaced_generation (pinned by
                                                a build whose records this one cannot decode),
                                                oversized (larger than the reader's 1 MiB buffer)
  tetrahost_policy_state{policy,state}          1 for the policy's current state, 0 for the others
  tetrahost_process_cache_size
  tetrahost_export_events_total{exporter}, _bytes_total, _errors_total, _dropped_total
  tetrahost_export_lost_total{exporter,reason}  the dropped events by reason (ENOSPC, EIO, file_removed...)
  tetrahost_export_filtered_total, tetrahost_export_rate_limited_total
  tetrahost_policy_reloads_total{result}        ok / failed loads of policy files, unloads
  tetrahost_user_actions_total{action,result}   DnsLookup/GetUrl: done, failed, timeout,
                                                queue_full, rate_limited (useractions.py)

  tetrahost_metrics_connections_total{result}   this endpoint's connections: served, evicted,
                                                timed_out, too_large, bad_request, refused
  tetrahost_new_binaries_total, tetrahost_binaries_known,
  tetrahost_process_exec_binary_total{binary}   executions by binary, bounded (metrics_binaries.py)

Also under the names Tetragon's dashboards query (tetragon_compat_metrics):
  tetragon_bpf_missed_events_total{msg_op,error}  the in-kernel losses by Tetragon's op code
  tetragon_tracingpolicy_loaded{state}           policies by Tetragon's state names
  tetragon_build_info{version,commit,python_version}
  tetragon_overhead_program_runs_total{policy,sensor,attach,section}, _seconds_total
                                                per BPF program, while kernel.bpf_stats_enabled=1

Nothing is counted twice: a custom Collector reads the agent's own counters
when Prometheus scrapes.  The HTTP server (metrics_http.py: bounded
connections and time, so a flood of slow clients cannot take the agent's
file descriptors) runs on its own thread while the event loop changes the
agent's state, so the collector never reads that state: it asks the loop for
a status snapshot (tetrahost/runtime/snapshot.py), taken on the loop's thread
at the end of its turn, with the BPF programs' run statistics, and reads the
copy.  The exporters' own counters are theirs (ints and a dict copied in one
C call under the GIL).

Label values come from a bounded set: event types and loss kinds are fixed
sets, policy and hook names only from policies actually loaded, and at most
MAX_POLICY_SERIES (policy, hook, action) series are kept; more are counted
under policy="other" rather than growing the scrape without bound.
"""
from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from tetrahost.events.event import metas_of
from tetrahost.metrics_http import BoundedHTTPServer, Renderer

log = logging.getLogger(__name__)

MAX_POLICY_SERIES = 1000
POLICY_STATES = ("enforcing", "monitoring", "partial", "error", "disabled")
LOSS_TYPES = {"exec": "PROCESS_EXEC", "fork": "PROCESS_CLONE", "exit": "PROCESS_EXIT"}


class PolicyEventCounter:
    """A sink (placed before the export filters) counting hook events by (policy, hook, action)."""

    name = "metrics"

    def __init__(self, policy_names=lambda: ()):
        self.counts: dict[tuple[str, str, str], int] = {}
        self._policy_names = policy_names

    def write_events(self, batch) -> None:
        counts = self.counts
        for meta in metas_of(batch):    # the meta only: an Event's line is not looked at
            if not meta.policy:
                continue
            key = (meta.policy, meta.hook, meta.action)
            if key not in counts:
                if len(counts) >= MAX_POLICY_SERIES or meta.policy not in self._policy_names():
                    key = ("other", "other", meta.action if len(meta.action) < 32 else "other")
            counts[key] = counts.get(key, 0) + 1

    def close(self) -> None:
        pass


class AgentCollector:
    """The agent's families, from the status snapshot its loop takes for each scrape."""

    def __init__(self, status, exporters=(), pipeline=None, timeout: float = 2.0):
        """status: a runtime.snapshot.StatusBoard (or anything with fresh(timeout, costs))."""
        self.status = status
        self.exporters = list(exporters)
        self.pipeline = pipeline
        self.timeout = timeout

    def collect(self):
        snap = self.status.fresh(self.timeout, costs=True)
        if snap is None:            # the loop has not turned yet: only what is not the agent's
            yield from self._exports()
            return
        yield from agent_metrics(snap)
        yield from self._exports()
        yield from tetragon_compat_metrics(snap)

    def _exports(self):
        fams = {k: CounterMetricFamily(f"tetrahost_export_{k}", f"Exporter {k}", labels=["exporter"])
                for k in ("events", "bytes", "errors", "dropped")}
        for exp in self.exporters:
            s = exp.stats
            for k, fam in fams.items():
                fam.add_metric([exp.name], getattr(s, k))
        yield from fams.values()
        lost = CounterMetricFamily("tetrahost_export_lost", "Events an exporter lost, by reason "
                                   "(ENOSPC, EIO, file_removed, queue_full, ...)", labels=["exporter", "reason"])
        for exp in self.exporters:
            for reason, n in dict(exp.stats.lost_by_reason).items():   # copied: written by the exporter's thread
                lost.add_metric([exp.name, reason], n)
        yield lost
        p = self.pipeline
        yield CounterMetricFamily("tetrahost_export_filtered", "Events removed by export allow/deny lists",
                                  value=p.filtered if p else 0)
        yield CounterMetricFamily("tetrahost_export_rate_limited", "Events dropped by the export rate limit",
                                  value=p.rate_limited if p else 0)


def agent_metrics(snap):
    """The agent's own families from one AgentSnapshot."""
    m = CounterMetricFamily("tetragon_events", "Events observed, by event type", labels=["type"])
    for kind, n in sorted(snap.events.items()):
        m.add_metric([kind.upper()], n)
    yield m
    yield CounterMetricFamily("tetragon_process_exec", "Process executions observed",
                              value=snap.events.get("process_exec", 0))

    m = CounterMetricFamily("tetragon_policy_events", "Policy (hook) events by policy, hook and action",
                            labels=["policy", "hook", "action"])
    for (policy, hook, action), n in sorted(snap.sections.get("policy_events", {}).items()):
        m.add_metric([policy, hook, action], n)
    yield m

    m = CounterMetricFamily("tetragon_missed_events",
                            "Records the kernel could not queue (ring buffer full), by type",
                            labels=["type"])
    totals = {t: 0 for t in LOSS_TYPES.values()}
    for kind, n in snap.lost.items():
        t = LOSS_TYPES.get(kind, kind.upper())
        totals[t] = totals.get(t, 0) + n
    for t, n in sorted(totals.items()):
        m.add_metric([t], n)
    yield m

    yield CounterMetricFamily("tetrahost_ringbuf_records", "Records read from the ring buffer",
                              value=snap.records)
    yield CounterMetricFamily("tetrahost_ringbuf_lost", "Records lost in the kernel (all types)",
                              value=sum(snap.lost.values()))
    yield CounterMetricFamily("tetrahost_decode_errors", "Malformed kernel records dropped",
                              value=snap.decode_errors)
    yield CounterMetricFamily("tetrahost_ringbuf_released_unwritten", "Ring buffer space released before "
                              "every exporter wrote its events (an exporter stalled)",
                              value=snap.released_unwritten)
    yield CounterMetricFamily("tetrahost_ringbuf_paused", "Loop turns that left the ring buffer unread because "
                              "an exporter's queue was full (back-pressure)", value=snap.reading_paused)
    yield CounterMetricFamily("tetrahost_ringbuf_overruns", "Loop turns that read the ring buffer although an "
                              "exporter's queue was full, because the ring was filling (that exporter "
                              "dropped the batch, counted in tetrahost_export_lost_total)",
                              value=snap.reading_overruns)
    m = CounterMetricFamily("tetrahost_records_dropped", "Kernel records read (or found pinned) but not "
                            "exported, by reason: unknown_hook, replaced_generation", labels=["reason"])
    for reason in ("unknown_hook", "replaced_generation", "oversized"):
        m.add_metric([reason], snap.dropped.get(reason, 0))
    yield m
    yield GaugeMetricFamily("tetrahost_process_cache_size", "Entries in the process cache",
                            value=snap.cache_size)

    m = GaugeMetricFamily("tetrahost_policy_state", "Loaded policies: 1 for the current state",
                          labels=["policy", "state"])
    for p in snap.policies[:MAX_POLICY_SERIES]:
        for state in POLICY_STATES:
            m.add_metric([p.name, state], 1 if state == p.state else 0)
    yield m
    m = CounterMetricFamily("tetrahost_policy_reloads", "Policy file loads/reloads and unloads, by result",
                            labels=["result"])
    for result, key in (("ok", "ok"), ("failed", "failed"), ("unload", "unloads")):
        m.add_metric([result], snap.policy_reloads.get(key, 0))
    yield m

    m = CounterMetricFamily("tetrahost_user_actions", "DnsLookup/GetUrl actions by result",
                            labels=["action", "result"])
    for (action, result), n in sorted(snap.sections.get("user_actions", {}).items()):
        m.add_metric([action, result], n)
    yield m


# in-kernel loss slot -> (msg_op, error) as Tetragon labels tetragon_bpf_missed_events_total:
# its message op codes (MSG_OP_EXECVE 5, MSG_OP_EXIT 7, MSG_OP_CLONE 23, MSG_OP_GENERIC_KPROBE 13)
# and why the record was lost (ring buffer full: ENOSPC; every scratch slot busy: EBUSY;
# TrackSock's owner map full: E2BIG)
MISSED_OPS = {"exec": ("5", "ENOSPC"), "exit": ("7", "ENOSPC"), "fork": ("23", "ENOSPC"),
              "hook": ("13", "ENOSPC"), "hook_busy": ("13", "EBUSY"), "socktrack": ("13", "E2BIG")}
# Tetragon's TracingPolicyState names, lower case as its metric writes them
TRACINGPOLICY_STATES = ("enabled", "disabled", "load_error", "error", "loading", "unloading")
_STATE_TO_TETRAGON = {"enforcing": "enabled", "monitoring": "enabled", "partial": "enabled", "error": "error",
                      "disabled": "disabled"}


def build_info() -> tuple[str, str, str]:
    """(version, commit, python_version) of this agent."""
    import os
    import platform
    from importlib import metadata
    try:
        version = metadata.version("tetrahost")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return version, os.environ.get("TETRAHOST_COMMIT", ""), platform.python_version()


def tetragon_compat_metrics(snap):
    """The families Tetragon's dashboards query, from one AgentSnapshot."""
    m = CounterMetricFamily("tetragon_bpf_missed_events", "Records the kernel could not send to user space, "
                            "by Tetragon message op and reason", labels=["msg_op", "error"])
    totals: dict[tuple[str, str], int] = {}
    for kind, n in snap.lost.items():
        key = MISSED_OPS.get(kind, ("0", kind.upper()))
        totals[key] = totals.get(key, 0) + n
    for (op, error), n in sorted(totals.items()):
        m.add_metric([op, error], n)
    yield m

    states = dict.fromkeys(TRACINGPOLICY_STATES, 0)
    for p in snap.policies:
        states[_STATE_TO_TETRAGON.get(p.state, "error")] += 1
    states["load_error"] += len(snap.policy_errors)
    m = GaugeMetricFamily("tetragon_tracingpolicy_loaded", "Tracing policies by state (Tetragon's names: "
                          "enforcing, monitoring and partial policies are enabled; rejected files load_error)",
                          labels=["state"])
    for state, n in states.items():
        m.add_metric([state], n)
    yield m

    m = GaugeMetricFamily("tetragon_build_info", "Build information of the agent",
                          labels=["version", "commit", "python_version"])
    m.add_metric(list(build_info()), 1)
    yield m

    runs = CounterMetricFamily("tetragon_overhead_program_runs", "Runs of each BPF program of the agent "
                               "(while kernel.bpf_stats_enabled=1)", labels=["policy", "sensor", "attach", "section"])
    secs = CounterMetricFamily("tetragon_overhead_program_seconds", "Time spent in each BPF program of the agent "
                               "(while kernel.bpf_stats_enabled=1)", labels=["policy", "sensor", "attach", "section"])
    seen: dict[tuple[str, str, str, str], list[int]] = {}
    for cost in snap.program_costs:
        acc = seen.setdefault((cost.policy, cost.sensor, cost.attach, cost.section), [0, 0])
        acc[0] += cost.runs
        acc[1] += cost.run_time_ns
    for labels, (n, ns) in sorted(seen.items()):
        runs.add_metric(list(labels), n)
        secs.add_metric(list(labels), ns / 1e9)
    yield runs
    yield secs


def parse_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" / ":PORT" / "[::1]:PORT" -> (host, port); "" host = all IPv4 interfaces."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def render_metrics(registry) -> "Renderer":
    """The HTTP handler: /metrics (and /) in the format the scraper asks for."""
    def render(method: str, target: str, accept: str):
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET and HEAD\n"
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            return "404 Not Found", "text/plain", b"not found: try /metrics\n"
        encoder, content_type = choose_encoder(accept)
        return "200 OK", content_type, encoder(registry)
    return render


class ServerCollector:
    """The metrics server's own connection outcomes (read on its thread, where they change)."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        m = CounterMetricFamily("tetrahost_metrics_connections",
                                "Connections to this metrics endpoint, by outcome", labels=["result"])
        for result, n in self.server.stats.copy().items():
            m.add_metric([result], n)
        yield m


class MetricsServer:
    """Component: serves /metrics from start() to stop()."""

    def __init__(self, address: str, exporters=(), pipeline=None, policy_counter=None, collectors=()):
        """policy_counter: the PolicyEventCounter sink, reported in the snapshot (loop thread);
        collectors: more collectors of state that is theirs (BinaryExecCounter)."""
        self.address = address
        self.collectors = list(collectors)      # more collectors of the agent's state (BinaryExecCounter)
        self.exporters = exporters
        self.pipeline = pipeline
        self.policy_counter = policy_counter
        self.registry = CollectorRegistry(auto_describe=False)
        self._server = None
        self._thread = None
        self.port = None

    def start(self, services) -> None:
        counter = self.policy_counter
        if counter is not None:
            manager = services.policies
            counter._policy_names = (lambda: manager.policies) if manager is not None else (lambda: ())
            services.status.add_section("policy_events", lambda: dict(counter.counts))
        self.registry.register(AgentCollector(services.status, self.exporters, self.pipeline))
        for collector in self.collectors:
            self.registry.register(collector)
        host, port = parse_address(self.address)
        try:
            self._server = BoundedHTTPServer(host, port, render_metrics(self.registry))
        except OSError as exc:
            # Metrics are not worth losing security events over: report, run without.
            log.error("metrics: cannot listen on %s: %s; running without /metrics", self.address, exc)
            return
        self.registry.register(ServerCollector(self._server))
        self.port = self._server.port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics: serving http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._server = None
