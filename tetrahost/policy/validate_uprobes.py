"""Validate `spec.uprobes`: probes on functions of user-space programs.

One entry names a binary (`path`) and where to probe it: `symbols` (functions
by their ELF symbol name) or `offsets` (file offsets into the binary).  Each
symbol or offset becomes one Hook (kind "uprobe") sharing the entry's args,
selectors, message and tags, as Tetragon attaches one uprobe per symbol.

A uprobe sees the registers of a user-space call: arguments are integers or
pointers into the caller's memory, so only integer, string, char_buf and nop
argument types make sense; kernel object types (file, sock, cred...) are
rejected with that reason.  Return probes, reference-counter offsets
(semaphores), addresses and Override (argRegs) are rejected as not supported.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .context import Context, check_fields, expect_map, get_list, get_str, join
from .errors import shown
from .hookshape import HookShape
from .model import Hook
from .validate_args import fill_shape, validate_args, validate_message, validate_tags
from .validate_selectors import check_string_sets, validate_selectors
from .vocab import ArgKind
from .yamlnodes import YNode

UPROBE_FIELDS = ("path", "symbols", "offsets", "args", "selectors", "message", "tags")
UPROBE_NOT_SUPPORTED = {
    "symbol": "`symbol` is the field of Tetragon's first uprobe version; write `symbols: [NAME]`",
    "refCtrOffsets": "reference counter offsets (refCtrOffsets, USDT semaphores) are not supported by tetrahost yet",
    "addrs": "addresses (addrs) are not supported by tetrahost yet; give symbols or file offsets",
    "data": "data arguments are not supported by tetrahost yet",
    "btfPath": "btfPath (typed arguments from a binary's BTF) is not supported by tetrahost yet",
    "return": "return uprobes (uretprobes) are not supported by tetrahost yet",
    "returnArg": "return uprobes (uretprobes, returnArg) are not supported by tetrahost yet",
    "returnArgAction": "return uprobes (uretprobes, returnArgAction) are not supported by tetrahost yet",
    "preload": "preload is not supported by tetrahost",
}
# Argument types a user-space call can pass: integers read from registers,
# strings and buffers in the caller's memory.  Capability types are kernel
# values (a number in a kernel_cap_t), not something a program passes.
_KERNEL_INTEGER_TYPES = frozenset({"capability", "kernel_cap_t", "cap_inheritable", "cap_permitted",
                                   "cap_effective"})
# ELF symbol names: C identifiers, C++ mangled names (_ZN...), versioned
# (memcpy@GLIBC_2.14) and compiler clones (foo.cold, foo.isra.0).
_ELF_SYMBOL = re.compile(r"^[A-Za-z_.$][A-Za-z0-9_.$@]*$")
MAX_SYMBOL_LENGTH = 1024
MAX_BINARY_PATH = 4095
MAX_OFFSET = (1 << 63) - 1


def validate_uprobes(ctx: Context, spec: YNode, path: str) -> list[Hook]:
    hooks: list[Hook] = []
    for i, node in enumerate(get_list(ctx, spec, "uprobes", path)):
        hooks.extend(_validate_uprobe(ctx, node, f"{join(path, 'uprobes')}[{i}]"))
    return hooks


def _validate_uprobe(ctx: Context, node: YNode, path: str) -> list[Hook]:
    if not expect_map(ctx, node, path):
        return []
    errors_before = len(ctx.errors)
    check_fields(ctx, node, path, UPROBE_FIELDS, UPROBE_NOT_SUPPORTED)
    binary = binary_path(ctx, node, path)
    targets = _targets(ctx, node, path)

    base = probe_body(ctx, node, path, "uprobe", binary)
    if len(ctx.errors) != errors_before:
        return []
    return [replace(base, name=symbol or f"0x{offset:x}", symbol=symbol, offset=offset,
                    source=ctx.loc(item, ipath))
            for symbol, offset, item, ipath in targets]


def probe_body(ctx: Context, node: YNode, path: str, kind: str, binary: str) -> Hook:
    """What a uprobe and a USDT point share: arguments (user memory),
    message, tags and selectors; a Hook of `kind` on `binary`, named by the caller."""
    declared = validate_args(ctx, node, path, kind)
    check_user_arg_types(ctx, node, path, declared)
    args = [arg for _, arg in declared if arg is not None]
    message = validate_message(ctx, node, path)
    tags = validate_tags(ctx, node, path)
    shape = HookShape(kind=kind, name=binary)
    fill_shape(shape, declared, args)
    selectors = validate_selectors(ctx, node, path, shape)
    check_string_sets(ctx, node, path, selectors)
    return Hook(kind=kind, name="", path=binary, args=tuple(args), selectors=tuple(selectors),
                message=message, tags=tuple(tags))


def binary_path(ctx: Context, node: YNode, path: str) -> str:
    binary = get_str(ctx, node, "path", path, required=True)
    line, ppath = node.key_line("path"), join(path, "path")
    if not binary:
        if node.get("path") is not None:
            ctx.error(line, ppath, "the path of the binary to probe is empty", "invalid-value")
        return ""
    if not binary.startswith("/"):
        ctx.error(line, ppath, f"{shown(binary)} is not an absolute path (the binary or library to probe, "
                  'e.g. "/usr/bin/bash")', "invalid-value")
    elif "\0" in binary or len(binary) > MAX_BINARY_PATH:
        ctx.error(line, ppath, f"not a usable path (NUL byte, or longer than {MAX_BINARY_PATH} bytes)",
                  "invalid-value")
    return binary


def _targets(ctx: Context, node: YNode, path: str) -> list[tuple[str, int, YNode, str]]:
    """(symbol, offset, node, path) of each place to probe: a symbol (offset 0)
    or a file offset (symbol "")."""
    out: list[tuple[str, int, YNode, str]] = []
    symbols = get_list(ctx, node, "symbols", path)
    offsets = get_list(ctx, node, "offsets", path)
    if symbols and offsets:
        ctx.error(node.key_line("offsets"), join(path, "offsets"), "symbols and offsets together are not "
                  "supported by tetrahost (give symbols, or file offsets into the binary)", "not-supported",
                  "uprobe symbols with offsets")
        return out
    if not symbols and not offsets:
        if node.get("symbol") is not None:
            return out          # the old field's own error says what to write
        ctx.error(node.line, join(path, "symbols"), "a uprobe needs symbols (function names in the binary) "
                  "or offsets (file offsets into it)", "missing", "symbols")
        return out
    seen: dict = {}
    for i, item in enumerate(symbols or offsets):
        key = "symbols" if symbols else "offsets"
        ipath = f"{join(path, key)}[{i}]"
        value = item.value if item.kind == "scalar" else None
        if symbols:
            if not isinstance(value, str) or isinstance(value, bool):
                ctx.error(item.line, ipath, f"expected a symbol name, got {item.describe()}", "type")
                continue
            if len(value) > MAX_SYMBOL_LENGTH or not _ELF_SYMBOL.match(value):
                ctx.error(item.line, ipath, f"{shown(value)} is not an ELF symbol name", "invalid-name")
                continue
            target = (value, 0)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET:
                ctx.error(item.line, ipath, f"expected a file offset (an integer from 0 to {MAX_OFFSET}), "
                          f"got {item.describe()}", "type")
                continue
            target = ("", value)
        if target in seen:
            ctx.error(item.line, ipath, f"{target[0] or hex(target[1])} is already listed at {seen[target]}",
                      "duplicate")
            continue
        seen[target] = ipath
        out.append((*target, item, ipath))
    return out


def check_user_arg_types(ctx: Context, node: YNode, path: str, declared) -> None:
    items = get_list(ctx, node, "args", path)
    for i, (item, (_, arg)) in enumerate(zip(items, declared)):
        if arg is None:
            continue
        user_value = (arg.kind is ArgKind.INTEGER and arg.base_type not in _KERNEL_INTEGER_TYPES
                      or arg.base_type in ("string", "char_buf") or arg.kind is ArgKind.NOP)
        if not user_value:
            ctx.error(item.key_line("type"), f"{join(path, 'args')}[{i}].type",
                      f"argument type {shown(arg.type)} is a kernel object; a uprobe reads a user-space "
                      "call's arguments: integers, string or char_buf", "invalid", "uprobe arg type")
