"""spec.enforcers: the syscalls at which a NotifyEnforcer verdict is carried out.

Tetragon's enforcer: a hook's NotifyEnforcer action (argError, argSig) notes a
verdict for the current thread; when that thread is at one of the enforcer's
calls, the enforcer makes the call return argError and sends argSig.  One
enforcer per policy (as in Tetragon); its calls are syscalls ("sys_dup",
"__ia32_sys_dup", "list:NAME").  Tetragon also takes security_* functions
(enforced with fmod_ret): rejected here by name.
"""

from __future__ import annotations

from .context import Context, check_fields, expect_map, get_list, join
from .errors import shown
from .model import Hook
from .validate_lists import LIST_PREFIX, SyscallList, parse_syscall_value
from .yamlnodes import YNode

ENFORCER_NAME = "enforcer"


def validate_enforcers(ctx: Context, spec: YNode, path: str, lists: dict[str, SyscallList | None]) -> list[Hook]:
    """The policy's enforcer as a hook of kind "enforcer" (none: [])."""
    items = get_list(ctx, spec, "enforcers", path)
    if len(items) > 1:
        ctx.error(spec.key_line("enforcers"), join(path, "enforcers"), f"{len(items)} enforcers; a policy "
                  "has one (as in Tetragon): put every call in its calls", "limit", "enforcers per policy")
        return []
    hooks = []
    for i, node in enumerate(items):
        epath = f"{join(path, 'enforcers')}[{i}]"
        if not expect_map(ctx, node, epath):
            continue
        errors_before = len(ctx.errors)
        check_fields(ctx, node, epath, ("calls",))
        x64: dict[str, None] = {}
        i386: dict[str, None] = {}
        calls = get_list(ctx, node, "calls", epath, required=True)
        for j, item in enumerate(calls):
            _add_call(ctx, item, f"{join(epath, 'calls')}[{j}]", lists, x64, i386)
        if not calls and node.get("calls") is not None:
            ctx.error(node.key_line("calls"), join(epath, "calls"), "an enforcer needs at least one call", "invalid")
        if len(ctx.errors) == errors_before:
            hooks.append(Hook(kind="enforcer", name=ENFORCER_NAME, syscall=True, syscalls=tuple(x64),
                              syscalls32=tuple(i386), source=ctx.loc(node, epath)))
    return hooks


def _add_call(ctx: Context, item: YNode, cpath: str, lists, x64: dict, i386: dict) -> None:
    if item.kind != "scalar" or not isinstance(item.value, str):
        ctx.error(item.line, cpath, f"expected a syscall or list:NAME, got {item.describe()}", "type")
        return
    value = item.value
    if value.startswith(LIST_PREFIX):
        name = value[len(LIST_PREFIX):]
        if name not in lists:
            known = ", ".join(lists) or "none"
            ctx.error(item.line, cpath, f"{shown(value)} names no list of spec.lists (defined: {known})",
                      "unknown-list", name)
        elif lists[name] is not None:
            x64.update(dict.fromkeys(lists[name].syscalls))
            i386.update(dict.fromkeys(lists[name].syscalls32))
        return
    if value.startswith("security_"):
        ctx.error(item.line, cpath, f"{shown(value)}: enforcers on security_* functions (fmod_ret) are not "
                  "supported by tetrahost yet; enforcers on syscalls are", "not-supported",
                  "enforcers on security_ functions")
        return
    parsed = parse_syscall_value(value)
    if isinstance(parsed, str):
        ctx.error(item.line, cpath, parsed, "invalid-name")
        return
    (x64 if parsed[0] == "x64" else i386)[parsed[1]] = None
