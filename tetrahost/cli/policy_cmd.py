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
from tetrahost.policy.check import check_files, render_results
from tetrahost.policy.compile import CompileError, KernelUnreadable, compile_hook


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

    why_not = verifier_available(features) if verify else "not verified (--no-verify)"
    records = records if records is not None else []

    def describe(hook, mode: str) -> str:
        record = {"hook": hook.describe(), "mode": mode, "method": None, "program": None,
                  "verified": False, "failed": []}
        records.append(record)
        try:
            compiled = compile_hook(hook, 0, host_ns, monitor=mode == "monitor")
        except KernelUnreadable as exc:
            record["failed"].append(str(exc))
            return f"kernel side: not checked here: {exc}"
        except CompileError as exc:
            failures.append(exc)
            record["failed"].append(str(exc))
            return f"kernel side: NOT SUPPORTED: {exc}"
        if features is None:
            return f"kernel side: compiles; attach method: {not_probed}"
        try:
            candidates = candidates_compiled(hook, compiled, features)
        except AttachError as exc:
            record["failed"].append(str(exc))
            return f"kernel side: compiles; on this kernel: CANNOT ATTACH: {exc}"
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


def check_paths(paths: list[str], no_probe: bool, out=sys.stdout, err=sys.stderr, verify: bool = True,
                output: str = "text") -> int:
    """Validate, compile, plan and (as root) verify every policy in paths; 0
    when every file is valid and every hook compiles.  `tetra tracingpolicy
    check` uses it too."""
    failures: list = []
    records: list = []
    features, not_probed = probed_features(no_probe)
    describe = describer(features, not_probed, HostNamespaces.from_proc(), failures, verify, records)
    results = check_files(paths)
    text = render_results(results, describe)
    if output == "json":
        # records came in render order: policy by policy, hook by hook
        owners = [p.name for r in results if r.ok for p in r.policies for _ in p.hooks]
        for record, name in zip(records, owners):
            record["policy"] = name
        print(json.dumps({"files": [{"file": os.fspath(r.file), "ok": r.ok,
                                     "errors": [e.render() for e in r.errors]} for r in results],
                          "hooks": records}, indent=2), file=out)
    else:
        print(text, file=out)
    if failures:
        print(f"{len(failures)} hook(s) use features the kernel side does not support yet", file=err)
    return 0 if all(r.ok for r in results) and not failures else 1


def check(args) -> int:
    return check_paths(args.files, args.no_probe, verify=not args.no_verify, output=args.output)
