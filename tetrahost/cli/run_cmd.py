"""`tetrahost run`: the agent in the foreground.

Settings come from the configuration file (/etc/tetragon/tetrahost.toml, or
--config), then command-line flags override them.  This module turns the
result into the agent's sinks and components:

  sinks:       PolicyEventCounter, BinaryExecCounter (metrics, see every event)
               ExportPipeline (allow/deny, field filters, rate limit) -> exporters:
                 stdout (JSON or compact), JSON file(s) with rotation,
                 journald (non-blocking native protocol)             [on worker threads]
                 Elasticsearch                                       [own thread]
  components:  the pipeline (rate_limit_info timer), policy directory watch, control socket,
               metrics server, sd_notify (last: READY=1 once the policies are in place)
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import os
import signal
import sys

from tetrahost.runtime.heap import HeapTrim, return_freed_memory_promptly

log = logging.getLogger(__name__)


def register(sub) -> None:
    from tetrahost.config import DEFAULT_PATH

    p = sub.add_parser("run", help="run the agent in the foreground",
                       description="Load the sensors and write Tetragon-shaped JSON events. "
                                   f"Settings are read from {DEFAULT_PATH} (if present) or --config; "
                                   "flags override them.")
    p.add_argument("--config", metavar="FILE", help=f"configuration file (default {DEFAULT_PATH} if it exists)")
    p.add_argument("--export-file", metavar="PATH",
                   help="write JSON events to PATH instead of export.filenames (mode 0600, rotated "
                        "as export.file says)")
    p.add_argument("--stdout", action=argparse.BooleanOptionalAction, default=None,
                   help="write events to stdout (default: export.stdout.enabled)")
    p.add_argument("--stdout-format", choices=("json", "compact"),
                   help="stdout format (default: export.stdout.format)")
    p.add_argument("--journald", action=argparse.BooleanOptionalAction, default=None,
                   help="send events to the journal (default: export.journald.enabled)")
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="serve Prometheus metrics here; \"\" or off disables (default: metrics.address)")
    p.add_argument("--elasticsearch-url", metavar="URL",
                   help="send events to this Elasticsearch (enables export.elasticsearch)")
    p.add_argument("--export-rate-limit", type=int, metavar="N",
                   help="at most N exported events per minute, -1 = unlimited (default: export.rate_limit)")
    p.add_argument("--enable-process-cred", action=argparse.BooleanOptionalAction, default=None,
                   help="capabilities and credentials in process objects, Tetragon's flag "
                        "(default: export.process_cred, off)")
    p.add_argument("--enable-process-ns", action=argparse.BooleanOptionalAction, default=None,
                   help="namespaces in process objects, Tetragon's flag (default: export.process_ns, off)")
    p.add_argument("--policy", action="append", default=[], metavar="FILE",
                   help="load this TracingPolicy file (repeatable)")
    p.add_argument("--policy-dir", metavar="DIR",
                   help="watch this policy directory (default: agent.policy_dir, watched when the agent "
                        "runs with a configuration file)")
    p.add_argument("--socket", metavar="PATH",
                   help="serve the control socket (tetra CLI) at PATH (default when a config file "
                        "was read: /run/tetrahost/tetrahost.sock)")
    p.add_argument("--no-socket", action="store_true", help="do not serve the control socket")
    p.add_argument("--node-name", help="node_name in events (default: agent.node_name, else the host name)")
    p.add_argument("--proc-root", help="proc file system to scan at start (default: agent.proc_root, /proc)")
    p.add_argument("--ringbuf-size", type=int, metavar="BYTES",
                   help="kernel ring buffer size, a power of two (default: agent.ringbuf_size, 8 MiB)")
    p.add_argument("--pin-dir", metavar="DIR",
                   help="bpffs directory of the pinned state, \"\" for none (default: agent.pin_dir)")
    p.add_argument("--exit-keeps-pins", action="store_true",
                   help="an orderly exit leaves the policies enforcing (the systemd unit sets it: "
                        "its ExecStopPost runs `tetrahost cleanup --if-stopping`, which removes them "
                        "on a stop, not on a restart)")
    p.set_defaults(func=run)


def apply_overrides(cfg, args):
    """Command-line flags win over the file."""
    e, a = cfg.export, cfg.agent
    if args.export_file:
        e.filenames = [os.path.abspath(args.export_file)]
    if args.stdout is not None:
        e.stdout.enabled = args.stdout
    if args.stdout_format:
        e.stdout.format = args.stdout_format
    if args.journald is not None:
        e.journald.enabled = args.journald
    if args.metrics_address is not None:
        cfg.metrics.enabled = args.metrics_address not in ("", "off")
        if cfg.metrics.enabled:
            cfg.metrics.address = args.metrics_address
    if args.elasticsearch_url:
        e.elasticsearch.enabled = True
        e.elasticsearch.url = args.elasticsearch_url
    if args.export_rate_limit is not None:
        e.rate_limit = args.export_rate_limit
    if args.enable_process_cred is not None:
        e.process_cred = args.enable_process_cred
    if args.enable_process_ns is not None:
        e.process_ns = args.enable_process_ns
    for attr in ("policy_dir", "node_name", "proc_root", "ringbuf_size", "pin_dir"):
        if getattr(args, attr) is not None:
            setattr(a, attr, getattr(args, attr))
    return cfg


def setup_agent_logging(cfg) -> None:
    """Agent logs to the journal when running under systemd (JOURNAL_STREAM) or when configured."""
    from tetrahost.export import journald

    mode = cfg.export.journald.agent_logs
    if mode == "off" or (mode == "auto" and not os.environ.get("JOURNAL_STREAM")):
        return
    if not journald.journal_available():
        log.warning("agent logs: no journald at %s, logging to stderr", journald.JOURNAL_SOCKET)
        return
    root = logging.getLogger()
    handler = journald.log_handler()
    handler.setLevel(root.level)
    root.addHandler(handler)
    if journald.stderr_is_journal():
        # stderr is the journal already: keep one (structured) copy of each line.
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr:
                root.removeHandler(h)


def policy_state_file(components) -> str:
    """Where set-mode/enable/disable decisions are kept: beside the primary
    policy directory's files ("" when no directory is watched)."""
    from tetrahost.runtime.overrides import POLICY_STATE_FILE
    for c in components:
        if getattr(c, "primary", False):
            return os.path.join(c.path, POLICY_STATE_FILE)
    return ""


def policy_components(cfg, args) -> list:
    """Policy directory watch and control socket.

    The directory is watched when named with --policy-dir or when a
    configuration file was read (a deployed service); an ad-hoc `tetrahost run`
    without either does not pick up whatever /etc/tetragon/policies.d holds.
    The control socket likewise: with --socket, or at its default path when
    a configuration file was read, so `tetra status` works against the
    service; ad-hoc runs (tests, several agents on one host) would otherwise
    fight over the default path.  --no-socket turns it off."""
    out = []
    files = None
    service = cfg.source != "(defaults)"
    if args.policy_dir or service:
        from tetrahost.runtime.policy_files import PolicyFiles
        from tetrahost.runtime.reconciler import PolicyDirectory
        primary = PolicyDirectory(cfg.agent.policy_dir)
        files = PolicyFiles(primary)         # tetra tracingpolicy add/delete write here
        out.append(primary)
        other = cfg.agent.tetragon_policy_dir
        if service and other and os.path.isdir(other) \
                and os.path.realpath(other) != os.path.realpath(cfg.agent.policy_dir):
            out.append(PolicyDirectory(other, primary=False))
    if (args.socket or service) and not args.no_socket:
        from tetrahost.control.server import ControlServer
        from tetrahost.control.protocol import DEFAULT_SOCKET
        out.append(ControlServer(args.socket or DEFAULT_SOCKET, policy_files=files))
    return out


def build_outputs(cfg, node_name: str, extra_components=()):
    """(sinks, components, exporters) for the Agent, from a Config."""
    from tetrahost.config import export_paths
    from tetrahost.export import journald
    from tetrahost.export.filters import ExportPipeline, parse_filter_list
    from tetrahost.export.rotating import RotatingFileSink
    from tetrahost.export.sinks import ThreadedSink, stdout_sink
    from tetrahost.metrics import MetricsServer, PolicyEventCounter
    from tetrahost.metrics_binaries import BinaryExecCounter
    from tetrahost.notify import Notifier

    e = cfg.export
    exporters = []
    if e.stdout.enabled:
        exporters.append(ThreadedSink(stdout_sink(compact=e.stdout.format == "compact")))
    for path in export_paths(cfg):
        exporters.append(ThreadedSink(RotatingFileSink(
            path, max_bytes=int(e.file.max_size_mb * 1024 * 1024), max_backups=e.file.max_backups,
            compress=e.file.compress)))
    if e.journald.enabled:
        if journald.journal_available():
            # Sending one datagram per entry, and waiting for a busy journald, is a worker's job.
            exporters.append(ThreadedSink(journald.JournaldSink()))
        else:
            log.warning("journald export: no journald listening on %s; journal export off",
                        journald.JOURNAL_SOCKET)
    if e.elasticsearch.enabled:
        from tetrahost.export.elastic import ElasticsearchSink
        es = e.elasticsearch
        exporters.append(ElasticsearchSink(
            es.url, es.index, daily_index=es.daily_index, batch_size=es.batch_size,
            flush_interval=es.flush_interval, buffer_size=es.buffer_size, timeout=es.timeout,
            max_retry_delay=es.max_retry_delay, username=es.username, password=es.password,
            api_key=es.api_key, ca_file=es.ca_file, verify_tls=es.verify_tls, data_stream=es.data_stream))
    pipeline = ExportPipeline(
        exporters, allow=parse_filter_list(e.allow_list, "export.allow_list"),
        deny=parse_filter_list(e.deny_list, "export.deny_list"),
        drop_process_fields=e.drop_process_fields, rate_limit=e.rate_limit, node_name=node_name)
    counter = PolicyEventCounter()
    sinks = [counter, pipeline]
    components = [pipeline, HeapTrim(), *extra_components]
    if cfg.metrics.enabled and cfg.metrics.address not in ("", "off"):
        binaries = BinaryExecCounter(cfg.metrics.new_binary_learning_seconds)
        sinks.insert(1, binaries)
        components.append(MetricsServer(cfg.metrics.address, exporters, pipeline, counter,
                                        collectors=[binaries]))
    if cfg.systemd.notify:
        components.append(Notifier(cfg.systemd.status_interval))   # last: READY=1 after the rest
    return sinks, components, exporters


# Container allocations (net of frees) between two young-generation runs of
# the cyclic garbage collector; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def collect_cycles_less_often() -> None:
    """A higher threshold for the cyclic collector's young generation.

    The objects of the event path (records, cache entries, events, their
    lines) are freed by reference counting, not by the cyclic collector; with
    the default threshold it still ran ~20 times per 1,000 execs, and each
    tenth run (and each hundredth) walked older generations too.  Measured
    (an exec storm with the seed policies, 3,000 execs, 4 rounds each):
    36.2 -> 31.2 µs of agent CPU per exec.  Cyclic garbage is still
    collected, a little later."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def configure_rendering(renderer, export) -> None:
    """Host fields and redaction, on the renderer every event line comes from
    (process and hook events alike): no exporter sees an unredacted line."""
    from tetrahost.export.redaction import Redactor
    renderer.host_fields = export.host_fields
    renderer.process_cred = export.process_cred
    renderer.process_ns = export.process_ns
    renderer.stack_addresses = export.stack_addresses
    renderer.redactor = Redactor.from_config(export.redaction_filters, export.redact_default_secrets)


def run(args) -> int:
    from tetrahost import config
    from tetrahost.daemon import Agent
    from tetrahost.sensors.pins import resolve_pin_dir

    try:
        cfg = apply_overrides(config.load(args.config), args)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_agent_logging(cfg)
    from tetrahost import logrates
    limiter = logrates.install()     # after the handlers are in place: it filters each of them
    # A stuck agent must be diagnosable in place: `kill -USR1 PID` writes
    # every thread's Python stack to stderr (journald under systemd), and a
    # crash in C code (libbpf, the extension) leaves one too.
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return_freed_memory_promptly()
    collect_cycles_less_often()
    if os.geteuid() != 0:
        print("tetrahost run: needs root (loading BPF programs needs CAP_BPF and CAP_PERFMON "
              "or CAP_SYS_ADMIN)", file=sys.stderr)
        return 1
    if cfg.source != "(defaults)":
        log.info("configuration from %s", cfg.source)
    sinks = []
    try:
        watched = policy_components(cfg, args)
        sinks, components, _ = build_outputs(cfg, cfg.agent.node_name, watched)
        agent = Agent(sinks, node_name=cfg.agent.node_name or None, proc_root=cfg.agent.proc_root,
                      ringbuf_bytes=cfg.agent.ringbuf_size or None, policy_files=args.policy,
                      components=components, pin_dir=cfg.agent.pin_dir if args.pin_dir is not None else resolve_pin_dir(cfg.agent.pin_dir),
                      keep_pins=cfg.agent.keep_enforcing_on_stop or args.exit_keeps_pins,
                      export_hold=cfg.agent.export_hold_seconds, config=cfg,
                      policy_state_file=policy_state_file(watched))
        configure_rendering(agent.renderer, cfg.export)
        agent.loop.add_timer(5.0, limiter.flush)     # "repeated N more times" lines
        return agent.run()
    except Exception as exc:   # noqa: BLE001 - whatever stops the agent: one line, not a traceback
        log.debug("tetrahost run failed", exc_info=True)     # the traceback, for --log-level debug
        log.error("tetrahost run: %s", one_line(exc))
        for sink in sinks:      # stop exporter threads started before the failure
            try:
                sink.close()
            except Exception:
                pass
        return 1


def one_line(exc: BaseException, limit: int = 2000) -> str:
    """exc as one log line: its lines joined ("another agent is serving
    /run/...", a BpfError with the verifier's last lines, every error of a
    rejected --policy file); an error that is not one of ours names its type."""
    text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    ours = (type(exc).__module__.startswith("tetrahost.")
            or isinstance(exc, (OSError, ValueError, RuntimeError)))
    if not ours or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"
