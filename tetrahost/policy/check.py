"""`tetrahost policy check FILE...`: load policies and say what they will do.

check_file gives a CheckResult (the accepted policies, or every error); the
renderer prints per policy "OK <name>: N hooks" and one line per hook and
selector with canonicalized values ("/bin/su → /usr/bin/su"), or the errors.
How a hook attaches depends on the running kernel; the caller passes
`describe_attach(hook, mode) -> str` (the sensors layer knows; mode is the
policy's, since monitor mode needs no hook that can enforce), default "not probed".
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from .load import LoadResult, load_path
from .model import Action, Hook, MatchArg, PathValue, Policy, Selector

AttachDescriber = Callable[[Hook, str], str]


def attach_not_probed(hook: Hook, mode: str) -> str:
    return "attach method: not probed"


# What `check` reports per file is exactly what loading it gives.
CheckResult = LoadResult


def check_file(path: str | os.PathLike, root: str = "/", display_name: str | None = None) -> CheckResult:
    """Load one file; never raises for problems of the policy or the file."""
    return load_path(path, root=root, display_name=display_name)


def check_files(paths: Iterable[str | os.PathLike], root: str = "/") -> list[CheckResult]:
    return [check_file(path, root=root) for path in paths]


def render_results(results: Iterable[CheckResult], describe_attach: AttachDescriber = attach_not_probed) -> str:
    results = list(results)
    parts = [render_result(r, describe_attach) for r in results]
    failed = sum(1 for r in results if not r.ok)
    parts.append(f"{len(results) - failed} file(s) OK, {failed} rejected")
    return "\n".join(parts)


def render_result(result: CheckResult, describe_attach: AttachDescriber = attach_not_probed) -> str:
    lines: list[str] = []
    if result.ok:
        for policy in result.policies:
            lines.extend(_render_policy(policy, describe_attach))
    else:
        count = len(result.errors)
        lines.append(f"FAIL {result.file}: {count} error{'s' if count != 1 else ''}")
        lines.extend(f"  {error.render()}" for error in result.errors)
    lines.extend(f"  {warning.render()}" for warning in result.warnings)
    return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _render_policy(policy: Policy, describe_attach: AttachDescriber) -> list[str]:
    lines = [f"OK {policy.name}: {_plural(len(policy.hooks), 'hook')} ({policy.file}, mode {policy.mode})"]
    for hook in policy.hooks:
        lines.append(f"  {hook.describe()}")
        if hook.is_exec_hook:
            lines.append("    exec hook: matchBinaries matches the calling OR the executed binary")
        args = ", ".join(f"{a.index}:{a.type}" + (f" ({a.label})" if a.label else "") + _resolved(a)
                         for a in hook.args)
        if args:
            lines.append(f"    args: {args}")
        if hook.return_arg is not None:
            lines.append(f"    returns: {hook.return_arg.type}")
        if hook.kind == "enforcer":
            lines.append("    acts on the NotifyEnforcer notes of this policy's hooks, at these syscalls")
        elif not hook.selectors:
            lines.append("    no selectors: every call is posted")
        for selector in hook.selectors:
            lines.append(f"    selector {selector.index}: {_describe_selector(selector, hook, policy.mode)}")
        lines.append(f"    {describe_attach(hook, policy.mode)}")
    return lines


def _resolved(arg) -> str:
    if not arg.resolve:
        return ""
    start = f"({arg.btf_type} *) " if arg.btf_type else ""
    if arg.resolved is None:
        return f" resolve {start}{arg.resolve} (not resolved here: {arg.resolve_unavailable})"
    return f" resolve {start}{arg.resolve} \u2192 {arg.resolved.reached}"


def _values(values: Iterable[object]) -> str:
    return ", ".join(v.describe() if isinstance(v, PathValue) or hasattr(v, "describe") else str(v)
                     for v in values)


def _describe_match_arg(match: MatchArg, hook: Hook) -> str:
    target = "return" if match.arg_position < 0 else f"arg{hook.args[match.arg_position].index}"
    if not match.parsed:
        return f"{target} {match.operator}"
    return f"{target} {match.operator} {_values(match.parsed)}"


def _describe_selector(selector: Selector, hook: Hook, mode: str) -> str:
    parts: list[str] = []
    for binaries in selector.match_binaries:
        follow = " (and children)" if binaries.follow_children else ""
        parts.append(f"binary {binaries.operator} {_values(binaries.values)}{follow}")
    parts.extend(_describe_match_arg(m, hook) for m in selector.match_args)
    parts.extend(_describe_match_arg(m, hook) for m in selector.match_return_args)
    for pids in selector.match_pids:
        flags = [f for f, on in (("follow forks", pids.follow_forks), ("namespace PIDs", pids.is_namespace_pid)) if on]
        parts.append(f"pid {pids.operator} {_values(pids.values)}" + (f" ({', '.join(flags)})" if flags else ""))
    for ns in selector.match_namespaces:
        parts.append(f"{ns.namespace} namespace {ns.operator} {_values(ns.values)}")
    for caps in selector.match_capabilities:
        scope = " (namespace caps)" if caps.is_namespace_capability else ""
        parts.append(f"{caps.type} caps {caps.operator} {_values(caps.values)}{scope}")
    for change in selector.match_namespace_changes:
        parts.append(f"namespace change {change.operator} {_values(change.values)}")
    for caps in selector.match_capability_changes:
        parts.append(f"{caps.type} caps change {caps.operator} {_values(caps.values)}")
    condition = f"if {' and '.join(parts)}" if parts else "always"
    actions = ", ".join(_describe_action(a, mode) for a in selector.effective_actions)
    text = f"{condition} then {actions}"
    if selector.match_return_actions:
        text += "; on return " + ", ".join(_describe_action(a, mode) for a in selector.match_return_actions)
    return text


def _describe_action(action: Action, mode: str) -> str:
    text = action.action
    if action.action == "Signal":
        text += f" {action.arg_sig}"
    elif action.action == "Override":
        text += f" (return {action.arg_error})"
    elif action.action == "NotifyEnforcer":
        text += f" (the enforcer returns {action.arg_error}, sends signal {action.arg_sig or 'none'})"
    elif action.rate_limit:
        text += f" at most once per {action.rate_limit} per {action.rate_limit_scope}"
    stacks = [n for n, on in (("kernel", action.kernel_stack_trace), ("user", action.user_stack_trace)) if on]
    if stacks:
        text += f" with the {' and '.join(stacks)} stack trace{'s' if len(stacks) > 1 else ''}"
    if action.ima_hash:
        text += " with the IMA hash of the file"
    if action.is_enforcement and mode == "monitor":
        text += " [not performed: monitor mode]"
    return text
