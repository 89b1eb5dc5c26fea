"""Validate a TracingPolicy `spec` and build the model: hooks and their arguments.

Selectors live in validate_selectors.py, matchArgs values in validate_matchargs.py,
actions in validate_actions.py. This module owns the spec layout and the hook
and argument rules.
"""

from __future__ import annotations

import re

from .errors import shown
from .context import (Context, check_fields, choice, expect_map, get_bool,
                      get_list, get_str, join)
from .model import Arg, Hook
from .hookshape import HookShape
from .validate_args import validate_message, fill_shape, resolve_hook_args, validate_arg, validate_args, validate_tags
from .validate_enforcers import validate_enforcers
from .validate_lists import LIST_PREFIX, SyscallList, validate_lists
from .validate_selectors import check_string_sets, validate_selectors
from .validate_uprobes import validate_uprobes
from .validate_usdts import validate_usdts
from .vocab import ACCEPTED_ATTACH_OPTIONS, POLICY_MODES, SUPPORTED_RETURN_ARG_ACTIONS
from .yamlnodes import YNode

SPEC_FIELDS = ("kprobes", "tracepoints", "lsmhooks", "uprobes", "usdts", "lists", "enforcers", "options", "loader")
SPEC_NOT_SUPPORTED = {
    "fentries": "spec.fentries is not supported by tetrahost yet (write the hook under "
                "spec.kprobes: tetrahost uses fentry by itself where the kernel allows)",
    "selectorsMacros": "selector macros (spec.selectorsMacros) are not supported by tetrahost yet",
}

KPROBE_FIELDS = ("call", "syscall", "return", "args", "returnArg", "returnArgAction",
                 "selectors", "message", "tags", "ignore")
TRACEPOINT_FIELDS = ("subsystem", "event", "raw", "args", "selectors", "message", "tags")
LSM_FIELDS = ("hook", "args", "selectors", "message", "tags")
HOOK_NOT_SUPPORTED = {
    "data": "data arguments (values read from the current task) are not supported by tetrahost yet",
}
# Kernel symbols: C identifiers, plus the ".isra.0"/".constprop.0" suffixes of
# compiler clones that do appear in kallsyms.
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_TRACEPOINT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYSCALL_NAME = re.compile(r"^(?:__x64_|__ia32_|__arm64_|__s390x_|__riscv_)?sys_[a-z0-9_]+$")


def validate_spec(ctx: Context, spec: YNode, path: str = "spec") -> tuple[list[Hook], str, dict[str, str]]:
    """Return (hooks, mode, options); problems go to ctx."""
    if not expect_map(ctx, spec, path):
        return [], "enforce", {}
    check_fields(ctx, spec, path, SPEC_FIELDS, SPEC_NOT_SUPPORTED)
    if get_bool(ctx, spec, "loader", path):
        ctx.error(spec.key_line("loader"), join(path, "loader"),
                  "loader events (spec.loader: true) are not supported by tetrahost yet",
                  "not-supported", "loader")
    mode, options = _validate_options(ctx, spec, path)
    lists = validate_lists(ctx, spec, path)
    enforcers = validate_enforcers(ctx, spec, path, lists)
    has_enforcer = spec.get("enforcers") is not None

    hooks: list[Hook] = []
    sections = (("kprobes", "kprobe"), ("tracepoints", "tracepoint"), ("lsmhooks", "lsm"))
    for key, kind in sections:
        for i, node in enumerate(get_list(ctx, spec, key, path)):
            hook = _validate_hook(ctx, node, f"{join(path, key)}[{i}]", kind, lists, has_enforcer)
            if hook is not None:
                hooks.append(hook)
    if enforcers and not any(a.action == "NotifyEnforcer" for h in hooks for s in h.selectors
                             for a in s.match_actions):
        ctx.warn(spec.key_line("enforcers"), join(path, "enforcers"), "no selector has a NotifyEnforcer "
                 "action: the enforcer never acts")
    hooks.extend(enforcers)
    hooks.extend(validate_uprobes(ctx, spec, path))
    hooks.extend(validate_usdts(ctx, spec, path))
    present = [k for k, _ in sections if spec.get(k) is not None]
    present += [k for k in ("uprobes", "usdts") if spec.get(k) is not None]
    present += [k for k in SPEC_NOT_SUPPORTED if spec.get(k) is not None]
    if spec.get("lists") is not None and not present:
        present.append("lists")     # the lists' own errors say more than "no hooks"
    if not present and not spec.get("loader"):
        ctx.error(spec.line, path, "the policy has no hooks (expected spec.kprobes, "
                  "spec.tracepoints, spec.lsmhooks, spec.uprobes or spec.usdts)", "no-hooks")
    return hooks, mode, options


def _validate_options(ctx: Context, spec: YNode, path: str) -> tuple[str, dict[str, str]]:
    mode = "enforce"  # Tetragon's default: enforcement actions are performed
    options: dict[str, str] = {}
    for i, node in enumerate(get_list(ctx, spec, "options", path)):
        opath = f"{join(path, 'options')}[{i}]"
        if not expect_map(ctx, node, opath):
            continue
        check_fields(ctx, node, opath, ("name", "value"))
        name = get_str(ctx, node, "name", opath, required=True)
        value = get_str(ctx, node, "value", opath)
        if not name:
            continue
        if name in options:
            ctx.error(node.line, join(opath, "name"), f'option {shown(name)} is given twice', "duplicate")
        options[name] = value
        if name == "policy-mode":
            mode = choice(ctx, node, "value", opath, POLICY_MODES, what="policy mode") or mode
        elif name in ACCEPTED_ATTACH_OPTIONS:
            ctx.warn(node.line, opath, f'option {shown(name)} tunes how Tetragon attaches; '
                     "tetrahost chooses attach methods itself and ignores it")
        else:
            ctx.error(node.line, join(opath, "name"), f'unknown policy option {shown(name)} '
                      f"(expected one of: policy-mode, {', '.join(sorted(ACCEPTED_ATTACH_OPTIONS))})",
                      "unknown-value", "option")
    return mode, options


def _validate_hook(ctx: Context, node: YNode, path: str, kind: str,
                   lists: dict[str, SyscallList | None], has_enforcer: bool = False) -> Hook | None:
    if not expect_map(ctx, node, path):
        return None
    errors_before = len(ctx.errors)
    fields = {"kprobe": KPROBE_FIELDS, "tracepoint": TRACEPOINT_FIELDS, "lsm": LSM_FIELDS}[kind]
    check_fields(ctx, node, path, fields, HOOK_NOT_SUPPORTED)
    extra: dict = {}
    if kind == "kprobe":
        name = _validate_call(ctx, node, path)
        extra.update(_validate_kprobe_flags(ctx, node, path, name))
        if name.startswith(LIST_PREFIX):
            extra.update(_validate_list_call(ctx, node, path, name, lists, extra))
    elif kind == "lsm":
        name = get_str(ctx, node, "hook", path, required=True)
        if name and not _SYMBOL.match(name):
            ctx.error(node.key_line("hook"), join(path, "hook"), f'{shown(name)} is not an LSM hook name', "invalid-name")
        if name.startswith("security_"):
            ctx.error(node.key_line("hook"), join(path, "hook"),
                      f'LSM hooks are named without "security_" (write "{name[len("security_"):]}")',
                      "invalid-name")
    else:
        subsystem = get_str(ctx, node, "subsystem", path, required=True)
        event = get_str(ctx, node, "event", path, required=True)
        for key, value in (("subsystem", subsystem), ("event", event)):
            if value and not _TRACEPOINT_NAME.match(value):
                ctx.error(node.key_line(key), join(path, key), f'{shown(value)} is not a tracepoint {key} name', "invalid-name")
        name = f"{subsystem}/{event}"
        extra.update(subsystem=subsystem, event=event, raw=get_bool(ctx, node, "raw", path))

    declared = resolve_hook_args(ctx, kind, name, extra, validate_args(ctx, node, path, kind))
    args = [arg for _, arg in declared if arg is not None]
    return_arg = _validate_return_arg(ctx, node, path, kind, extra.get("return_", False))
    message = validate_message(ctx, node, path)
    tags = validate_tags(ctx, node, path)

    shape = HookShape(kind=kind, name=name)
    fill_shape(shape, declared, args)
    shape.return_ = extra.get("return_", False)
    shape.return_arg = return_arg
    shape.is_exec_hook = "bprm" in name and not name.startswith(LIST_PREFIX)
    shape.lists = lists
    shape.has_enforcer = has_enforcer
    selectors = validate_selectors(ctx, node, path, shape)
    check_string_sets(ctx, node, path, selectors)
    if len(ctx.errors) != errors_before:
        return None
    return Hook(kind=kind, name=name, args=tuple(args), return_arg=return_arg,
                selectors=tuple(selectors), message=message, tags=tuple(tags),
                source=ctx.loc(node, path), **extra)


def _validate_call(ctx: Context, node: YNode, path: str) -> str:
    name = get_str(ctx, node, "call", path, required=True)
    if name.startswith(LIST_PREFIX):
        pass            # _validate_list_call, once the flags are known
    elif name and not _SYMBOL.match(name):
        ctx.error(node.key_line("call"), join(path, "call"), f'{shown(name)} is not a kernel function name', "invalid-name")
    return name


def _validate_list_call(ctx: Context, node: YNode, path: str, call: str,
                        lists: dict[str, SyscallList | None], flags: dict) -> dict:
    """`call: "list:NAME"`: one hook over every syscall of the list (implied
    `syscall: true`, as in Tetragon: a list's functions are syscalls)."""
    name = call[len(LIST_PREFIX):]
    line, cpath = node.key_line("call"), join(path, "call")
    if name not in lists:
        known = ", ".join(lists) or "none"
        ctx.error(line, cpath, f'{shown(call)} names no list of spec.lists (defined: {known})', "unknown-list", name)
        return {}
    syscall_list = lists[name]
    if syscall_list is None:
        return {}       # the list's own errors say why
    if node.get("syscall") is not None and not flags["syscall"]:
        ctx.error(node.key_line("syscall"), join(path, "syscall"),
                  f'list {shown(name)} holds syscalls: syscall: false contradicts it', "invalid")
    if flags["return_"]:
        ctx.error(node.key_line("return"), join(path, "return"),
                  "return probes on a list hook are not supported by tetrahost yet (one return "
                  "program per list would have to tell the syscalls' returns apart)",
                  "not-supported", "return probes on list hooks")
    return {"syscall": True, "syscall_inferred": False, "syscall_list": name,
            "syscalls": syscall_list.syscalls, "syscalls32": syscall_list.syscalls32}


def _validate_kprobe_flags(ctx: Context, node: YNode, path: str, name: str) -> dict:
    flags: dict = {}
    if node.get("syscall") is None:
        # Tetragon's CRD has a default for `syscall`, and its examples rely on the
        # name instead (`security_inode_mkdir` without `syscall`): infer from the
        # name so a syscall gets the syscall ABI and a kernel function does not.
        flags["syscall"] = bool(_SYSCALL_NAME.match(name))
        flags["syscall_inferred"] = True
    else:
        flags["syscall"] = get_bool(ctx, node, "syscall", path)
    flags["return_"] = get_bool(ctx, node, "return", path)

    action = get_str(ctx, node, "returnArgAction", path)
    if action:
        line = node.key_line("returnArgAction")
        apath = join(path, "returnArgAction")
        if action not in SUPPORTED_RETURN_ARG_ACTIONS:
            ctx.error(line, apath, f'unknown returnArgAction {shown(action)} (expected one of: '
                      f"{', '.join(SUPPORTED_RETURN_ARG_ACTIONS)})", "unknown-value", "returnArgAction")
        elif not flags["return_"]:
            ctx.error(line, apath, "returnArgAction needs return: true", "invalid")
        flags["return_arg_action"] = action

    ignore = node.get("ignore")
    if ignore is not None and expect_map(ctx, ignore, join(path, "ignore")):
        check_fields(ctx, ignore, join(path, "ignore"), ("callNotFound",))
        flags["ignore_call_not_found"] = get_bool(ctx, ignore, "callNotFound", join(path, "ignore"))
    return flags


def _validate_return_arg(ctx: Context, node: YNode, path: str, kind: str, return_: bool) -> Arg | None:
    child = node.get("returnArg")
    if child is None:
        return None
    rpath = join(path, "returnArg")
    arg = validate_arg(ctx, child, rpath, kind, is_return=True)
    if kind == "kprobe" and not return_:
        ctx.warn(child.line, rpath, "returnArg is ignored because the hook does not have return: true "
                 "(as in Tetragon)")
        return None
    return arg
