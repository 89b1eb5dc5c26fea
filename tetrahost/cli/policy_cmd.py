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
from tetrahost.policy.check import check_file, render_result
from tetrahost.policy.compile import CompileError, KernelUnreadable, compile_hook
from tetrahost.policy.load import internal_error


def register(sub) -> None:
    p = sub.add_parser("policy", help="work with TracingPolicy files")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    c = psub.add_parser("check", help="validate policy files and show how each hook would attach here")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--no-probe", action="store_true",
                   help="do not probe this kernel (attach methods are then not shown)")
    c.set_defaults(func=check)


def probed_features(no_probe: bool = False):
    """(this kernel's features, or None, and why not probed)."""
    if no_probe:
        return None, "not probed (--no-probe)"
    if os.geteuid() != 0:
        return None, "not probed (needs root)"
    from tetrahost.sensors.probe import kernel_features
    return kernel_features(), ""


def describer(features, not_probed: str, host_ns: HostNamespaces, failures: list):
    """describe(hook, mode): whether the kernel side compiles the hook and how
    it attaches here, planned exactly as the agent plans it."""
    from tetrahost.sensors.attach import AttachError, plan_compiled

    def describe(hook, mode: str) -> str:
        try:
            compiled = compile_hook(hook, 0, host_ns, monitor=mode == "monitor")
        except KernelUnreadable as exc:
            return f"kernel side: not checked here: {exc}"
        except CompileError as exc:
            failures.append(exc)
            return f"kernel side: NOT SUPPORTED: {exc}"
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the check of the others
            failures.append(exc)
            return f"kernel side: REJECTED: {hook.source.file}: {internal_error(exc)}"
        if features is None:
            return f"kernel side: compiles; attach method: {not_probed}"
        try:
            plan = plan_compiled(hook, compiled, features)
        except AttachError as exc:
            return f"kernel side: compiles; on this kernel: CANNOT ATTACH: {exc}"
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
            return f"attach: REJECTED: {hook.source.file}: {internal_error(exc)}"
        return f"attach: {plan.method}"
    return describe


def check_paths(paths: list[str], no_probe: bool, out=sys.stdout, err=sys.stderr) -> int:
    """Validate, compile and plan every policy in paths; 0 when every file is
    valid and every hook compiles.  `tetra tracingpolicy check` uses it too."""
    failures: list = []
    features, not_probed = probed_features(no_probe)
    describe = describer(features, not_probed, HostNamespaces.from_proc(), failures)
    rejected = 0
    for path in paths:
        # one file at a time, so an unexpected error rejects that file only
        try:
            result = check_file(path)
            text = render_result(result, describe)
            rejected += not result.ok
        except Exception as exc:  # noqa: BLE001 - never a traceback, go on with the next file
            text = f"FAIL {path}: 1 error\n  {path}: {internal_error(exc)}"
            rejected += 1
        print(text, file=out, flush=True)
    print(f"{len(paths) - rejected} file(s) OK, {rejected} rejected", file=out)
    unsupported = sum(isinstance(f, CompileError) for f in failures)
    if unsupported:
        print(f"{unsupported} hook(s) use features the kernel side does not support yet", file=err)
    if len(failures) > unsupported:
        print(f"{len(failures) - unsupported} hook(s) failed with an internal error", file=err)
    return 0 if not rejected and not failures else 1


def check(args) -> int:
    return check_paths(args.files, args.no_probe)
