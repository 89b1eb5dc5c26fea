"""`tetrahost policy check FILE...`: validate policies without loading them.

Per file: the validator's verdict (file:line: field: error).  Per hook of a
valid policy: whether the kernel side can compile it, and how it would attach
on this kernel (from `tetrahost probe`; not probed without root) or exactly
why it cannot.  Exit status: 0 when every file is valid and every hook
compiles, 1 otherwise (a hook this kernel cannot attach is reported, but the
policy may be fine on another kernel, so it does not fail the check).
"""
from __future__ import annotations

import os
import sys

from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy.check import check_files, render_results
from tetrahost.policy.compile import CompileError, compile_hook


def register(sub) -> None:
    p = sub.add_parser("policy", help="work with TracingPolicy files")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    c = psub.add_parser("check", help="validate policy files and show how each hook would attach here")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--no-probe", action="store_true",
                   help="do not probe this kernel (attach methods are then not shown)")
    c.set_defaults(func=check)


def probed_features(no_probe: bool = False):
    """This kernel's features, or None when not probed (asked not to, or not root)."""
    if no_probe or os.geteuid() != 0:
        return None
    from tetrahost.sensors.probe import kernel_features
    return kernel_features()


def describer(features, host_ns: HostNamespaces, failures: list):
    from tetrahost.sensors.attach import AttachError, plan_attach

    def describe(hook) -> str:
        try:
            compiled = compile_hook(hook, 0, host_ns)
        except CompileError as exc:
            failures.append(exc)
            return f"kernel side: NOT SUPPORTED: {exc}"
        if features is None:
            return "kernel side: compiles; attach method: not probed (needs root)"
        try:
            plan = plan_attach(hook, features, compiled.uses_enforcement, compiled.uses_override)
        except AttachError as exc:
            return f"kernel side: compiles; on this kernel: CANNOT ATTACH: {exc}"
        return f"attach: {plan.method}"
    return describe


def check(args) -> int:
    failures: list = []
    describe = describer(probed_features(args.no_probe), HostNamespaces.from_proc(), failures)
    results = check_files(args.files)
    print(render_results(results, describe))
    if failures:
        print(f"{len(failures)} hook(s) use features the kernel side does not support yet", file=sys.stderr)
    return 0 if all(r.ok for r in results) and not failures else 1
