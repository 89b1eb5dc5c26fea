"""`tetrahost run`: the agent in the foreground."""
from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("run", help="run the agent in the foreground",
                       description="Load the sensors and write Tetragon-shaped JSON events.")
    p.add_argument("--export-file", metavar="PATH",
                   help="append JSON events to PATH (created with mode 0600)")
    p.add_argument("--stdout", action=argparse.BooleanOptionalAction, default=None,
                   help="write JSON events to stdout (default: on unless --export-file is given)")
    p.add_argument("--policy", action="append", default=[], metavar="FILE",
                   help="load this TracingPolicy file (repeatable)")
    p.add_argument("--node-name", help="node_name in events (default: the host name)")
    p.add_argument("--proc-root", default="/proc", help="proc file system to scan at start (default /proc)")
    p.add_argument("--ringbuf-size", type=int, metavar="BYTES",
                   help="kernel ring buffer size, a power of two (default 8 MiB)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tetrahost.bpf import BpfError
    from tetrahost.daemon import Agent
    from tetrahost.export.sinks import file_sink, stdout_sink

    if os.geteuid() != 0:
        print("tetrahost run: needs root (loading BPF programs needs CAP_BPF and CAP_PERFMON "
              "or CAP_SYS_ADMIN)", file=sys.stderr)
        return 1
    sinks = []
    try:
        if args.export_file:
            sinks.append(file_sink(args.export_file))
        if args.stdout or (args.stdout is None and not args.export_file):
            sinks.append(stdout_sink())
        return Agent(sinks, node_name=args.node_name, proc_root=args.proc_root,
                     ringbuf_bytes=args.ringbuf_size, policy_files=args.policy).run()
    except (BpfError, FileNotFoundError, PermissionError, ValueError) as exc:
        log.error("%s", exc)
        return 1
