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
        _features, caps, evidence = probe.probe_cached(refresh=True)   # the kernel now, not what was kept
    except probe.ProbeError as exc:
        print(f"tetrahost probe: {exc}" if "tetrahost probe" not in str(exc) else str(exc), file=sys.stderr)
        return 1
    render = probe.render_json if args.output == "json" else probe.render_text
    text = render(caps, evidence)
    pinned = pinned_state()
    if args.output == "json":
        import json
        doc = json.loads(text)
        doc["pinned"] = pinned
        text = json.dumps(doc, indent=2) + "\n"
    elif pinned is not None:
        text += render_pinned(pinned)
    sys.stdout.write(text)
    return 0


def pinned_state() -> dict | None:
    """What is pinned under agent.pin_dir (docs/pinning.md); None when pinning is off."""
    from tetrahost import config
    from tetrahost.sensors import pins

    try:
        root = pins.resolve_pin_dir(config.load().agent.pin_dir)
    except config.ConfigError:
        root = pins.resolve_pin_dir(pins.DEFAULT_PIN_DIR)
    return pins.inspect(root) if root else None


def render_pinned(p: dict) -> str:
    if not p["exists"]:
        return f"pinned state  none at {p['pin_dir']}\n"
    m = p["manifest"]
    head = (f"pinned state  {p['pin_dir']}: generation g{m['generation']}, build {m['build']}, "
            f"{p['hooks']} hook(s) of {len(p['policies'])} policies, written by pid {m.get('agent_pid')}"
            if m else f"pinned state  {p['pin_dir']}: manifest not trusted: {p['problem'] or 'missing'}")
    lines = [head] + [f"  policy {x['name']}: {x['hooks']} hook(s) from {x['file']}" for x in p["policies"]]
    lines += [f"  orphan {o}" for o in p["orphans"]]
    return "\n".join(lines) + "\n"
