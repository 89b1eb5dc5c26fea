"""Validate a TracingPolicy `spec` and build the model: hooks and their arguments.

Selectors live in validate_selectors.py, matchArgs values in validate_matchargs.py,
actions in validate_actions.py. This module owns the spec layout and the hook
and argument rules.
"""

from __future__ import annotations

import re

from . import limits
from .errors import shown
from .context import (Context, check_fields, choice, expect_map, get_bool, get_int,
                      get_list, get_str, join)
from .model import Arg, Hook
from .hookshape import HookShape
from .validate_lists import LIST_PREFIX, SyscallList, validate_lists
from .validate_selectors import validate_selectors
from .vocab import (ACCEPTED_ATTACH_OPTIONS, ArgKind, POLICY_MODES, SUPPORTED_ARG_TYPES,
                    SUPPORTED_RETURN_ARG_ACTIONS, TETRAGON_ONLY_ARG_TYPES)
from .yamlnodes import YNode

SPEC_FIELDS = ("kprobes", "tracepoints", "lsmhooks", "lists", "options", "loader")
SPEC_NOT_SUPPORTED = {
    "uprobes": "uprobes are not supported by tetrahost yet",
    "usdts": "USDT probes are not supported by tetrahost yet",
    "fentries": "spec.fentries is not supported by tetrahost yet (write the hook under "
                "spec.kprobes: tetrahost uses fentry by itself where the kernel allows)",
    "enforcers": "enforcers (spec.enforcers) are not supported by tetrahost yet",
    "selectorsMacros": "selector macros (spec.selectorsMacros) are not supported by tetrahost yet",
}

KPROBE_FIELDS = ("call", "syscall", "return", "args", "returnArg", "returnArgAction",
                 "selectors", "message", "tags", "ignore")
TRACEPOINT_FIELDS = ("subsystem", "event", "raw", "args", "selectors", "message", "tags")
LSM_FIELDS = ("hook", "args", "selectors", "message", "tags")
HOOK_NOT_SUPPORTED = {
    "data": "data arguments (values read from the current task) are not supported by tetrahost yet",
}
ARG_FIELDS = ("index", "type", "sizeArgIndex", "returnCopy", "maxData", "label")
ARG_NOT_SUPPORTED = {
    "resolve": "resolve (following struct fields from an argument) is not supported by tetrahost yet",
    "btfType": "btfType is not supported by tetrahost yet",
    "source": "argument sources are not supported by tetrahost yet",
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

    hooks: list[Hook] = []
    sections = (("kprobes", "kprobe"), ("tracepoints", "tracepoint"), ("lsmhooks", "lsm"))
    for key, kind in sections:
        for i, node in enumerate(get_list(ctx, spec, key, path)):
            hook = _validate_hook(ctx, node, f"{join(path, key)}[{i}]", kind, lists)
            if hook is not None:
                hooks.append(hook)
    present = [k for k, _ in sections if spec.get(k) is not None]
    present += [k for k in SPEC_NOT_SUPPORTED if spec.get(k) is not None]
    if spec.get("lists") is not None and not present:
        present.append("lists")     # the lists' own errors say more than "no hooks"
    if not present and not spec.get("loader"):
        ctx.error(spec.line, path, "the policy has no hooks (expected spec.kprobes, "
                  "spec.tracepoints or spec.lsmhooks)", "no-hooks")
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
                   lists: dict[str, SyscallList | None]) -> Hook | None:
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

    declared = _validate_args(ctx, node, path, kind)
    args = [arg for _, arg in declared if arg is not None]
    return_arg = _validate_return_arg(ctx, node, path, kind, extra.get("return_", False))
    message = get_str(ctx, node, "message", path)
    if len(message) > limits.MAX_MESSAGE_LENGTH:
        ctx.error(node.key_line("message"), join(path, "message"),
                  f"message is {len(message)} characters long, the limit is {limits.MAX_MESSAGE_LENGTH}", "limit")
    tags = _validate_tags(ctx, node, path)

    # matchArgs names kprobe/LSM args by function index, tracepoint args by
    # their position in `args` (see HookShape.args).
    shape = HookShape(kind=kind, name=name)
    for position, (index, arg) in enumerate(declared):
        key = position if kind == "tracepoint" else index
        if arg is None:
            if key is not None:
                shape.rejected.add(key)
            continue
        shape.args[key] = arg
        shape.positions[key] = args.index(arg)
    shape.return_ = extra.get("return_", False)
    shape.return_arg = return_arg
    shape.is_exec_hook = "bprm" in name and not name.startswith(LIST_PREFIX)
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
            "syscalls": syscall_list.syscalls}


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


def _validate_args(ctx: Context, node: YNode, path: str, kind: str) -> list[tuple[int | None, Arg | None]]:
    """(index as written, Arg or None if rejected) for each declared arg, in order.

    Rejected args stay in the list so a matchArgs naming one does not get a
    misleading "undeclared argument" error on top of the arg's own error.
    """
    declared: list[tuple[int | None, Arg | None]] = []
    seen: dict[int, str] = {}
    items = get_list(ctx, node, "args", path)
    if len(items) > limits.MAX_ARGS_PER_HOOK:
        ctx.error(node.key_line("args"), join(path, "args"),
                  f"{len(items)} args, the limit is {limits.MAX_ARGS_PER_HOOK} per hook", "limit", "args per hook")
    for i, item in enumerate(items):
        apath = f"{join(path, 'args')}[{i}]"
        arg = validate_arg(ctx, item, apath, kind)
        index_node = item.get("index") if item.kind == "map" else None
        index = index_node.value if index_node is not None and isinstance(index_node.value, int) else None
        if arg is not None and arg.index in seen:
            ctx.error(item.line, join(apath, "index"),
                      f"argument index {arg.index} is already declared at {seen[arg.index]}", "duplicate")
            arg = None
        if arg is not None:
            seen[arg.index] = apath
        declared.append((index, arg))
    return declared


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


def validate_arg(ctx: Context, node: YNode, path: str, hook_kind: str, is_return: bool = False) -> Arg | None:
    if not expect_map(ctx, node, path):
        return None
    errors_before = len(ctx.errors)
    check_fields(ctx, node, path, ARG_FIELDS, ARG_NOT_SUPPORTED)
    max_index = (limits.MAX_KPROBE_ARG_INDEX if hook_kind != "tracepoint" and not is_return
                 else limits.MAX_TRACEPOINT_ARG_INDEX)
    index = get_int(ctx, node, "index", path, required=True, minimum=0, maximum=max_index)
    type_name = get_str(ctx, node, "type", path, required=True)
    info = SUPPORTED_ARG_TYPES.get(type_name)
    if type_name and info is None:
        tline = node.key_line("type")
        if type_name in TETRAGON_ONLY_ARG_TYPES:
            ctx.error(tline, join(path, "type"), f'argument type {shown(type_name)} is known to Tetragon '
                      "but not supported by tetrahost yet", "unsupported-arg-type", type_name)
        else:
            ctx.error(tline, join(path, "type"), f'unknown argument type {shown(type_name)} (expected one of: '
                      f"{', '.join(SUPPORTED_ARG_TYPES)})", "unknown-arg-type", type_name)
    size_arg_index = get_int(ctx, node, "sizeArgIndex", path, minimum=1, maximum=limits.MAX_SIZE_ARG_INDEX) or 0
    return_copy = get_bool(ctx, node, "returnCopy", path)
    max_data = get_bool(ctx, node, "maxData", path)
    label = get_str(ctx, node, "label", path)
    if info is not None:
        _check_buffer_fields(ctx, node, path, info.base, hook_kind, size_arg_index, return_copy, max_data)
    if len(ctx.errors) != errors_before or info is None or index is None:
        return None
    return Arg(index=index, type=type_name, base_type=info.base, kind=info.kind, bits=info.bits,
               signed=info.signed, label=label, size_arg_index=size_arg_index,
               return_copy=return_copy, max_data=max_data, source=ctx.loc(node, path))


def _check_buffer_fields(ctx: Context, node: YNode, path: str, base: str, hook_kind: str,
                         size_arg_index: int, return_copy: bool, max_data: bool) -> None:
    is_buf = base == "char_buf"
    for key, given in (("sizeArgIndex", size_arg_index), ("returnCopy", return_copy), ("maxData", max_data)):
        if given and not is_buf:
            ctx.error(node.key_line(key), join(path, key), f"{key} only applies to char_buf arguments", "invalid")
    if is_buf and not size_arg_index and not return_copy:
        ctx.error(node.line, path, "a char_buf argument needs sizeArgIndex (the 1-based position of "
                  "the argument holding its size) or returnCopy: true", "invalid", "char_buf size")
    if return_copy and hook_kind != "kprobe":
        ctx.error(node.key_line("returnCopy"), join(path, "returnCopy"),
                  "returnCopy needs a function return, only kprobes have one", "invalid")
    if base == "nop" and node.get("label") is not None:
        ctx.warn(node.key_line("label"), join(path, "label"), "a nop argument is not reported; its label is unused")


def _validate_tags(ctx: Context, node: YNode, path: str) -> list[str]:
    tags = []
    items = get_list(ctx, node, "tags", path)
    if len(items) > limits.MAX_TAGS:
        ctx.error(node.key_line("tags"), join(path, "tags"),
                  f"{len(items)} tags, the limit is {limits.MAX_TAGS}", "limit", "tags")
    for i, item in enumerate(items):
        if item.kind != "scalar" or not isinstance(item.value, str):
            ctx.error(item.line, f"{join(path, 'tags')}[{i}]", f"expected a string, got {item.describe()}", "type")
        elif not item.value or "\0" in item.value:
            ctx.error(item.line, f"{join(path, 'tags')}[{i}]", "a tag must be a non-empty string without NUL bytes",
                      "invalid-value")
        else:
            tags.append(item.value)
    return tags



# The string-set map of the kernel side each string operator's values go to.
_STRING_SET_OF = {"Equal": "Equal/In", "NotEqual": "Equal/In", "In": "Equal/In", "NotIn": "Equal/In",
                  "Prefix": "Prefix", "NotPrefix": "Prefix", "Postfix": "Postfix", "NotPostfix": "Postfix"}


def check_string_sets(ctx: Context, node: YNode, path: str, selectors) -> None:
    """String and path values of all the hook's selectors share one BPF map per
    kind of set (hash for Equal/In, LPM trie for Prefix and for Postfix), of
    limits.MAX_STRING_SET_ENTRIES entries each: the only bound on their number."""
    counts: dict[str, int] = {}
    for sel in selectors:
        for ma in (*sel.match_args, *sel.match_return_args):
            if ma.arg_kind in (ArgKind.STRING, ArgKind.PATH) and ma.operator in _STRING_SET_OF:
                kind = _STRING_SET_OF[ma.operator]
                counts[kind] = counts.get(kind, 0) + len(ma.parsed)
        for mb in sel.match_binaries:
            kind = _STRING_SET_OF.get(mb.operator)
            if kind:
                counts[kind] = counts.get(kind, 0) + len(mb.values)
    for kind, count in counts.items():
        if count > limits.MAX_STRING_SET_ENTRIES:
            ctx.error(node.key_line("selectors"), join(path, "selectors"),
                      f"{count} {kind} string values in this hook's selectors (matchArgs and "
                      f"matchBinaries together), the limit is {limits.MAX_STRING_SET_ENTRIES} per hook",
                      "limit", "string values per hook")
