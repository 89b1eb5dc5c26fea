"""`tetrahost probe`: which hook kinds this kernel really allows, and why not."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("probe", help="test which BPF hook kinds this kernel supports",
                       description="Load and attach one tiny program per hook kind (tracepoint, kprobe, "
                                   "fentry, BPF-LSM, ...) and report, per kind, whether it works and why not.")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="output format (default: text)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tetrahost.sensors import probe

    try:
        _features, caps, evidence = probe.probe_cached()
    except probe.ProbeError as exc:
        print(f"tetrahost probe: {exc}" if "tetrahost probe" not in str(exc) else str(exc), file=sys.stderr)
        return 1
    render = probe.render_json if args.output == "json" else probe.render_text
    sys.stdout.write(render(caps, evidence))
    return 0
