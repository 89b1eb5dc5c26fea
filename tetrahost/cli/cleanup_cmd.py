"""`tetrahost cleanup`: remove the pinned state, so nothing of ours stays in the kernel.

The pinned programs enforce while no agent runs (docs/pinning.md).  This
removes them by hand, and is what the systemd unit's ExecStopPost runs with
--if-stopping: systemd runs ExecStopPost after every end of the service, a
crash and the stop half of `systemctl restart` (and so of a package upgrade)
included; only a stop job (`systemctl stop`, `apt remove`, shutdown) means the
operator wants the host without the agent, so only then is anything removed.
"""
from __future__ import annotations

import json
import subprocess
import sys

DEFAULT_UNIT = "tetrahost.service"


def register(sub) -> None:
    p = sub.add_parser("cleanup", help="remove the pinned BPF programs, links and maps",
                       description="Remove every pin under the pin directory (agent.pin_dir): with no "
                                   "agent running, this detaches and frees every program tetrahost left "
                                   "enforcing.  A running agent keeps its own until it exits.")
    p.add_argument("--config", metavar="FILE", help="configuration file (for agent.pin_dir)")
    p.add_argument("--pin-dir", metavar="DIR", help="pin directory (default: agent.pin_dir)")
    p.add_argument("--if-stopping", nargs="?", const=DEFAULT_UNIT, metavar="UNIT",
                   help="only when systemd is stopping UNIT (default tetrahost.service), not restarting "
                        "it, and agent.keep_enforcing_on_stop is false: for the unit's ExecStopPost")
    p.add_argument("--dry-run", action="store_true", help="say what is pinned, remove nothing")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=run)


def unit_job(unit: str, list_jobs: str | None = None) -> str | None:
    """The type of the job systemd runs for `unit` now ("stop", "restart",
    ...), None when there is none (a crash: the unit restarts it on its own)."""
    if list_jobs is None:
        try:
            list_jobs = subprocess.run(["systemctl", "list-jobs", "--no-legend", "--no-pager", unit],
                                       capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    for line in list_jobs.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == unit:
            return fields[2]
    return None


def should_clean(unit: str, keep_on_stop: bool, job: str | None) -> tuple[bool, str]:
    """(remove?, why) for --if-stopping."""
    if keep_on_stop:
        return False, "agent.keep_enforcing_on_stop is true: the policies keep enforcing"
    if job == "stop":
        return True, f"{unit} is being stopped"
    if job is None:
        return False, f"no job for {unit}: it ended on its own (a crash); enforcement stays for its restart"
    return False, f"{unit} has a {job} job: enforcement stays for the next agent"


def run(args) -> int:
    from tetrahost import config
    from tetrahost.sensors import pins as pins_mod

    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        cfg = config.Config()      # cleaning up must not depend on a valid configuration
    root = args.pin_dir if args.pin_dir is not None else pins_mod.resolve_pin_dir(cfg.agent.pin_dir)
    if not root:
        print("tetrahost cleanup: pinning is off (agent.pin_dir is empty): nothing to remove")
        return 0
    found = pins_mod.inspect(root)
    if args.if_stopping:
        clean, why = should_clean(args.if_stopping, cfg.agent.keep_enforcing_on_stop, unit_job(args.if_stopping))
        print(f"tetrahost cleanup: {why}")
        if not clean:
            return 0
    if not args.dry_run and found["exists"]:
        pins_mod.remove_tree(root)
    if args.output == "json":
        print(json.dumps({**found, "removed": not args.dry_run and found["exists"]}, indent=2))
    elif not found["exists"]:
        print(f"tetrahost cleanup: nothing pinned at {root}")
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"tetrahost cleanup: {verb} {root}: {found['hooks']} pinned hook(s) of "
              f"{len(found['policies'])} policies, {len(found['orphans'])} orphan(s)"
              + (f"; manifest not trusted: {found['problem']}" if found["problem"] else ""))
    return 0
