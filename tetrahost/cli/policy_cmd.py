"""`tetrahost policy check FILE...`: validate policies without enforcing them.

Per file: the validator's verdict (file:line: field: error).  Per hook of a
valid policy: whether the kernel side can compile it, and how it would attach
on this kernel.  As root, with the BPF objects built, that is verified: the
programs each way needs are loaded into the kernel (never attached) in the
agent's order of preference, and the first the kernel accepts is the method
shown, with every better one that was refused and why.  Without root only the
plan from the probed features can be shown ("not verified").  Exit status: 0
when every file is valid and every hook compiles, 1 otherwise (a hook this
kernel cannot attach is reported, but the policy may be fine on another
kernel, so it does not fail the check).  `-o json` adds one record per hook
(policy, hook, method, program, verified, failed) after the text.
"""
from __future__ import annotations

import json
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
    c.add_argument("--no-verify", action="store_true",
                   help="plan from the probed features only; do not load the programs to verify them")
    c.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="json: one record per hook (how it attaches, what was refused), no text")
    c.set_defaults(func=check)


def probed_features(no_probe: bool = False):
    """(this kernel's features, or None, and why not probed)."""
    if no_probe:
        return None, "not probed (--no-probe)"
    if os.geteuid() != 0:
        return None, "not probed (needs root)"
    from tetrahost.sensors.probe import kernel_features
    return kernel_features(), ""


def verifier_available(features) -> str:
    """Why the programs cannot be verified here, or "" when they can."""
    if features is None:
        return "not probed"
    try:
        from tetrahost.sensors.objects import find_object
        find_object("generic")
    except Exception as exc:       # extension or object missing: say which
        return f"not verified: {exc}"
    return ""


def describer(features, not_probed: str, host_ns: HostNamespaces, failures: list, verify: bool = True,
              records: list | None = None):
    """describe(hook, mode): whether the kernel side compiles the hook and how
    it attaches here, planned exactly as the agent plans it and, with verify,
    checked by the kernel's verifier in the agent's order of preference."""
    from tetrahost.sensors.attach import AttachError, candidates_compiled
    from tetrahost.tracefs import event_fields

    why_not = verifier_available(features) if verify else "not verified (--no-verify)"
    records = records if records is not None else []

    def describe(hook, mode: str) -> str:
        record = {"hook": hook.describe(), "mode": mode, "method": None, "program": None,
                  "verified": False, "failed": []}
        records.append(record)
        try:
            compiled = compile_hook(hook, 0, host_ns, monitor=mode == "monitor",
                                    tracepoint_fields=event_fields)
        except KernelUnreadable as exc:
            record["failed"].append(exc.render())
            return f"kernel side: not checked here: {exc.render()}"
        except CompileError as exc:
            failures.append(exc)
            record["failed"].append(exc.render())
            return f"kernel side: NOT SUPPORTED: {exc.render()}"
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the check of the others
            failures.append(exc)
            return f"kernel side: REJECTED: {hook.source.file}: {internal_error(exc)}"
        if features is None:
            return f"kernel side: compiles; attach method: {not_probed}"
        try:
            candidates = candidates_compiled(hook, compiled, features)
        except AttachError as exc:
            record["failed"].append(str(exc))
            return f"kernel side: compiles; on this kernel: CANNOT ATTACH: {exc}"
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the check of the others
            failures.append(exc)
            return f"attach: REJECTED: {hook.source.file}: {internal_error(exc)}"
        if why_not:
            plan = candidates[0]
            record.update(method=plan.method, program=plan.program)
            return f"attach: {plan.method} ({why_not})"
        from tetrahost.sensors.fallback import verify_candidates
        result = verify_candidates(candidates)
        record["failed"] = result.failed
        refused = "".join(f"\n    refused by this kernel: {f}" for f in result.failed)
        if result.plan is None:
            return f"kernel side: compiles; on this kernel: CANNOT ATTACH: every method was refused{refused}"
        record.update(method=result.plan.method, program=result.plan.program, verified=True)
        ok = candidates[0].method if not result.failed else result.plan.method.split(" [fallback;")[0]
        return f"attach: {ok} (verified: the kernel loaded it){refused}"
    return describe


def check_paths(paths: list[str], no_probe: bool, out=None, err=None, verify: bool = True,
                output: str = "text") -> int:
    """Validate, compile, plan and (as root) verify every policy in paths; 0
    when every file is valid and every hook compiles.  `tetra tracingpolicy
    check` uses it too.  out/err: sys.stdout/sys.stderr as they are at the
    call (a default bound at import would keep whatever they were then)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    failures: list = []
    records: list = []
    features, not_probed = probed_features(no_probe)
    describe = describer(features, not_probed, HostNamespaces.from_proc(), failures, verify, records)
    rejected = 0
    files: list[dict] = []
    owners: list[str] = []           # the policy of each record, in render order
    for path in paths:
        # one file at a time, so an unexpected error rejects that file only
        try:
            result = check_file(path)
            text = render_result(result, describe)
            rejected += not result.ok
            files.append({"file": os.fspath(result.file), "ok": result.ok,
                          "errors": [e.render() for e in result.errors]})
            owners += [p.name for p in result.policies for _ in p.hooks] if result.ok else []
        except Exception as exc:  # noqa: BLE001 - never a traceback, go on with the next file
            text = f"FAIL {path}: 1 error\n  {path}: {internal_error(exc)}"
            rejected += 1
            files.append({"file": os.fspath(path), "ok": False, "errors": [f"{path}: {internal_error(exc)}"]})
        if output != "json":
            print(text, file=out, flush=True)
    if output == "json":
        for record, name in zip(records, owners):
            record["policy"] = name
        print(json.dumps({"files": files, "hooks": records}, indent=2), file=out)
    else:
        print(f"{len(paths) - rejected} file(s) OK, {rejected} rejected", file=out)
    unsupported = sum(isinstance(f, CompileError) for f in failures)
    if unsupported:
        print(f"{unsupported} hook(s) use features the kernel side does not support yet", file=err)
    if len(failures) > unsupported:
        print(f"{len(failures) - unsupported} hook(s) failed with an internal error", file=err)
    return 0 if not rejected and not failures else 1


def check(args) -> int:
    return check_paths(args.files, args.no_probe, verify=not args.no_verify, output=args.output)
