"""Validate a hook's `args` (and returnArg's type) and `tags`: shared by
kprobes, tracepoints, LSM hooks (validate.py), uprobes and usdts (validate_uprobes.py, validate_usdts.py)."""

from __future__ import annotations

from dataclasses import replace

from . import limits
from .errors import shown
from .context import Context, check_fields, expect_map, get_bool, get_int, get_list, get_str, join
from .hookshape import HookShape
from .model import Arg
from .resolve import ResolveError, ResolveUnavailable, resolve_arg
from .vocab import SUPPORTED_ARG_TYPES, TETRAGON_ONLY_ARG_TYPES
from .yamlnodes import YNode

ARG_FIELDS = ("index", "type", "sizeArgIndex", "returnCopy", "maxData", "label", "resolve", "btfType")
ARG_NOT_SUPPORTED = {
    "source": "argument sources are not supported by tetrahost yet",
}
# hooks whose arguments `resolve:` can follow (kernel structures; Tetragon
# has no resolve on uprobes either)
RESOLVE_HOOK_KINDS = ("kprobe", "tracepoint", "lsm")

# The types an error lists: each once, by its canonical name (int32, not its
# aliases int and sint32), so the list fits in a message.
_CANONICAL_TYPES = tuple(name for name, info in SUPPORTED_ARG_TYPES.items() if name == info.base)


def validate_args(ctx: Context, node: YNode, path: str, kind: str) -> list[tuple[int | None, Arg | None]]:
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
                      f"{', '.join(_CANONICAL_TYPES)})", "unknown-arg-type", type_name)
    size_arg_index = get_int(ctx, node, "sizeArgIndex", path, minimum=1, maximum=limits.MAX_SIZE_ARG_INDEX) or 0
    return_copy = get_bool(ctx, node, "returnCopy", path)
    max_data = get_bool(ctx, node, "maxData", path)
    label = get_str(ctx, node, "label", path)
    if info is not None:
        _check_buffer_fields(ctx, node, path, info.base, hook_kind, size_arg_index, return_copy, max_data)
    resolve, btf_type = _resolve_fields(ctx, node, path, hook_kind, is_return, info)
    if len(ctx.errors) != errors_before or info is None or index is None:
        return None
    return Arg(index=index, type=type_name, base_type=info.base, kind=info.kind, bits=info.bits,
               signed=info.signed, label=label, size_arg_index=size_arg_index,
               return_copy=return_copy, max_data=max_data, source=ctx.loc(node, path),
               resolve=resolve, btf_type=btf_type, resolve_line=node.key_line("resolve"),
               btf_type_line=node.key_line("btfType"))


def _resolve_fields(ctx: Context, node: YNode, path: str, hook_kind: str, is_return: bool,
                    info) -> tuple[str, str]:
    """`resolve` and `btfType` as written; the walk over the kernel's BTF
    needs the whole hook (validate_resolve.py)."""
    resolve = get_str(ctx, node, "resolve", path)
    btf_type = get_str(ctx, node, "btfType", path)
    if not resolve and not btf_type:
        return "", ""
    key = "resolve" if resolve else "btfType"
    line, fpath = node.key_line(key), join(path, key)
    if not resolve:
        ctx.error(line, fpath, "btfType names the struct a resolve path starts from: it needs resolve",
                  "invalid", "btfType without resolve")
    elif is_return:
        ctx.error(line, fpath, "resolve applies to args, not to returnArg", "not-supported", "resolve on returnArg")
    elif hook_kind not in RESOLVE_HOOK_KINDS:
        ctx.error(line, fpath, f"resolve follows kernel structures: it applies to kprobes, tracepoints and "
                  f"LSM hooks, not to {hook_kind}s", "not-supported", f"resolve on {hook_kind}s")
    elif info is not None and info.base in ("char_buf", "nop"):
        ctx.error(line, fpath, f"a {info.base} argument cannot be resolved (resolve reads integers, strings, "
                  "paths, credentials and sockets)", "invalid", f"resolve on {info.base}")
    return resolve, btf_type


def _check_buffer_fields(ctx: Context, node: YNode, path: str, base: str, hook_kind: str,
                         size_arg_index: int, return_copy: bool, max_data: bool) -> None:
    is_buf = base == "char_buf"
    for key, given in (("sizeArgIndex", size_arg_index), ("returnCopy", return_copy)):
        if given and not is_buf:
            ctx.error(node.key_line(key), join(path, key), f"{key} only applies to char_buf arguments", "invalid")
    if max_data and base not in ("char_buf", "iov_iter"):
        ctx.error(node.key_line("maxData"), join(path, "maxData"),
                  "maxData only applies to char_buf and iov_iter arguments", "invalid")
    if is_buf and not size_arg_index and not return_copy:
        ctx.error(node.line, path, "a char_buf argument needs sizeArgIndex (the 1-based position of "
                  "the argument holding its size) or returnCopy: true", "invalid", "char_buf size")
    if return_copy and hook_kind != "kprobe":
        ctx.error(node.key_line("returnCopy"), join(path, "returnCopy"),
                  "returnCopy needs a function return, only kprobes have one", "invalid")
    if base == "nop" and node.get("label") is not None:
        ctx.warn(node.key_line("label"), join(path, "label"), "a nop argument is not reported; its label is unused")


def validate_message(ctx: Context, node: YNode, path: str) -> str:
    message = get_str(ctx, node, "message", path)
    if len(message) > limits.MAX_MESSAGE_LENGTH:
        ctx.error(node.key_line("message"), join(path, "message"),
                  f"message is {len(message)} characters long, the limit is {limits.MAX_MESSAGE_LENGTH}", "limit")
    return message


def validate_tags(ctx: Context, node: YNode, path: str) -> list[str]:
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


def fill_shape(shape: HookShape, declared: list[tuple[int | None, Arg | None]], args: list[Arg]) -> None:
    """What selectors may name: matchArgs names kprobe/LSM/uprobe args by
    function index, tracepoint args by their position in `args` (see HookShape.args)."""
    for position, (index, arg) in enumerate(declared):
        key = position if shape.kind == "tracepoint" else index
        if arg is None:
            if key is not None:
                shape.rejected.add(key)
            continue
        shape.args[key] = arg
        shape.positions[key] = args.index(arg)


def resolve_hook_args(ctx: Context, kind: str, name: str, hook: dict,
                      declared: list[tuple[int | None, Arg | None]]) -> list[tuple[int | None, Arg | None]]:
    """Walk each `resolve:` over the running kernel's BTF, from the hook's
    argument types (hook: the kprobe flags and tracepoint fields of
    validate.py).  A path that does not fit the kernel's types is an error
    at its line; a walk that cannot be done here (no BTF, a function
    missing from it) is kept on the Arg: compiling the hook says why."""
    out = []
    for index, arg in declared:
        if arg is None or not arg.resolve:
            out.append((index, arg))
            continue
        if hook.get("syscall"):
            ctx.error(arg.resolve_line, join(arg.source.path, "resolve"), "resolve follows kernel structures, "
                      "and a syscall's arguments are the caller's memory: hook the kernel function that "
                      "receives the structure instead", "not-supported", "resolve on syscalls")
            out.append((index, None))
            continue
        try:
            resolved = resolve_arg(kind, name, arg, raw=hook.get("raw", False), subsystem=hook.get("subsystem", ""),
                                   event=hook.get("event", ""))
        except ResolveError as exc:
            line = arg.btf_type_line if exc.field == "btfType" and arg.btf_type else arg.resolve_line
            field = "btfType" if exc.field == "btfType" and arg.btf_type else "resolve"
            ctx.error(line, join(arg.source.path, field), str(exc), "resolve", exc.detail)
            out.append((index, None))
            continue
        except ResolveUnavailable as exc:
            arg = replace(arg, resolve_unavailable=str(exc))
        else:
            arg = replace(arg, resolved=resolved)
        out.append((index, arg))
    return out
