"""spec.lists: named lists of functions a kprobe can hook at once (`call: "list:NAME"`).

Syscall lists ("syscalls": the names given; "generated_syscalls": every x86_64
syscall) are supported; one hook then covers every syscall of the list with
the same args and selectors.  Entries of 32-bit programs' syscalls
("__ia32_sys_dup", "i386/sys_dup") are their own syscalls: other numbers,
other kernel functions, matched only for tasks in a 32-bit syscall.  InMap
values "list:NAME" take the list's syscall numbers.  ftrace lists ("generated_ftrace" by pattern,
"ftrace" by names) hook arbitrary kernel functions: rejected precisely until
the kernel side can attach to a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tetrahost.arch import SYSCALLS_I386, SYSCALLS_X86_64
from tetrahost.constants import TH_SYSCALL64_I386

from .context import Context, check_fields, expect_map, get_bool, get_list, get_str, join
from .errors import Location, shown
from .yamlnodes import YNode

LIST_FIELDS = ("name", "type", "values", "pattern", "validated")
SYSCALL_LIST_TYPES = ("syscalls", "generated_syscalls")
FTRACE_LIST_TYPES = ("generated_ftrace", "ftrace")
LIST_TYPES = SYSCALL_LIST_TYPES + FTRACE_LIST_TYPES
LIST_PREFIX = "list:"

# "sys_dup", "__x64_sys_dup" and "dup" all name the syscall dup
_SYSCALL_PREFIX = re.compile(r"^(?:__x64_)?sys_")
# 32-bit programs' entry points (Tetragon's "__ia32_sys_dup" or "i386/sys_dup")
_I386_NAME = re.compile(r"^(?:__ia32_)?sys_")
_ABI_TABLES = {"x64": SYSCALLS_X86_64, "i386": SYSCALLS_I386}
_LIST_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SyscallList:
    name: str
    type: str                   # "syscalls" or "generated_syscalls"
    syscalls: tuple[str, ...]   # names without prefix ("dup"), each a key of SYSCALLS_X86_64
    source: Location
    syscalls32: tuple[str, ...] = ()   # 32-bit entries: keys of SYSCALLS_I386

    def numbers(self, syscall64: bool) -> tuple[int, ...]:
        """The list as InMap values: x86_64 numbers, and i386 numbers plus
        TH_SYSCALL64_I386 (syscall64 arguments only: a plain integer cannot
        tell the ABIs apart)."""
        nrs = tuple(SYSCALLS_X86_64[n] for n in self.syscalls)
        if syscall64:
            nrs += tuple(SYSCALLS_I386[n] | SYSCALL64_I386 for n in self.syscalls32)
        return nrs


# Tetragon's Is32Bit: a syscall64 value of a 32-bit syscall
SYSCALL64_I386 = TH_SYSCALL64_I386


def parse_syscall_value(value: str) -> tuple[str, str] | str:
    """(abi, syscall) a list value names: ("x64", "dup") for "sys_dup",
    "__x64_sys_dup", "dup" or "x64/sys_dup"; ("i386", "dup") for
    "__ia32_sys_dup" or "i386/sys_dup".  A message when it names none."""
    abi, slash, name = value.partition("/")
    if not slash:
        abi, name = ("i386", value) if value.startswith("__ia32_") else ("x64", value)
    if name.startswith("__x32_") or abi == "x32":
        return f"{shown(value)}: x32 ABI syscalls are not supported by tetrahost (x64 and i386 are)"
    if abi == "x64":
        if name.startswith("__ia32_"):
            return f"{shown(value)}: an x64 entry cannot name a 32-bit function"
        syscall = _SYSCALL_PREFIX.sub("", name, count=1)
    elif abi == "i386":
        if not _I386_NAME.match(name):
            return f"{shown(value)}: a 32-bit entry is written __ia32_sys_NAME or i386/sys_NAME"
        syscall = _I386_NAME.sub("", name, count=1)
    else:
        return f"{shown(value)}: unknown ABI {shown(abi)} (x64 or i386 on x86_64)"
    if syscall not in _ABI_TABLES[abi]:
        return f"{shown(value)} is not {'an x86_64' if abi == 'x64' else 'an i386 (32-bit)'} syscall"
    return abi, syscall


def syscall_of(value: str) -> str:
    """The syscall a list value names ("sys_dup" -> "dup")."""
    return _SYSCALL_PREFIX.sub("", value, count=1)


def validate_lists(ctx: Context, spec: YNode, path: str) -> dict[str, SyscallList | None]:
    """Every list by name; None for a list that is defined but unusable (its
    errors are already reported, so a hook naming it gets no second error)."""
    lists: dict[str, SyscallList | None] = {}
    where: dict[str, str] = {}
    for i, node in enumerate(get_list(ctx, spec, "lists", path)):
        lpath = f"{join(path, 'lists')}[{i}]"
        if not expect_map(ctx, node, lpath):
            continue
        errors_before = len(ctx.errors)
        check_fields(ctx, node, lpath, LIST_FIELDS)
        get_bool(ctx, node, "validated", lpath)   # Tetragon's own bookkeeping: accepted, unused
        name = get_str(ctx, node, "name", lpath, required=True)
        if name and not _LIST_NAME.match(name):
            ctx.error(node.key_line("name"), join(lpath, "name"),
                      f'{shown(name)} is not a list name (letters, digits, "_", "-", ".")', "invalid-name")
        if name in where:
            ctx.error(node.key_line("name"), join(lpath, "name"),
                      f'list {shown(name)} is already defined at {where[name]}', "duplicate")
            continue
        syscall_list = _validate_list(ctx, node, lpath, name)
        if name:
            where[name] = lpath
            lists[name] = syscall_list if len(ctx.errors) == errors_before else None
    return lists


def _validate_list(ctx: Context, node: YNode, lpath: str, name: str) -> SyscallList | None:
    type_name = get_str(ctx, node, "type", lpath, required=True)
    tline = node.key_line("type")
    if type_name in FTRACE_LIST_TYPES:
        ctx.error(tline, join(lpath, "type"), f'list type {shown(type_name)} (kernel functions by '
                  "ftrace name or pattern) is not supported by tetrahost yet; syscall lists are "
                  f"({', '.join(SYSCALL_LIST_TYPES)})", "not-supported", "ftrace lists")
        return None
    if type_name and type_name not in LIST_TYPES:
        ctx.error(tline, join(lpath, "type"), f'unknown list type {shown(type_name)} '
                  f"(expected one of: {', '.join(LIST_TYPES)})", "unknown-value", "list type")
        return None
    if node.get("pattern") is not None:
        ctx.error(node.key_line("pattern"), join(lpath, "pattern"),
                  "pattern belongs to generated_ftrace lists", "invalid")
    if type_name == "generated_syscalls":
        if node.get("values") is not None:
            ctx.error(node.key_line("values"), join(lpath, "values"),
                      "a generated_syscalls list holds every syscall: it takes no values", "invalid")
        syscalls, syscalls32 = tuple(SYSCALLS_X86_64), ()
    elif type_name == "syscalls":
        syscalls, syscalls32 = _validate_syscall_values(ctx, node, lpath)
    else:
        return None
    return SyscallList(name, type_name, syscalls, ctx.loc(node, lpath), syscalls32)


def _validate_syscall_values(ctx: Context, node: YNode, lpath: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    items = get_list(ctx, node, "values", lpath, required=True)
    if not items and node.get("values") is not None:
        ctx.error(node.key_line("values"), join(lpath, "values"), "a syscalls list needs at least one value",
                  "invalid")
    syscalls: dict[tuple[str, str], str] = {}      # (abi, syscall) -> path of the value that named it
    for i, item in enumerate(items):
        vpath = f"{join(lpath, 'values')}[{i}]"
        if item.kind != "scalar" or not isinstance(item.value, str):
            ctx.error(item.line, vpath, f"expected a syscall name, got {item.describe()}", "type")
            continue
        parsed = parse_syscall_value(item.value)
        if isinstance(parsed, str):
            ctx.error(item.line, vpath, parsed, "invalid-name")
        elif parsed in syscalls:
            ctx.error(item.line, vpath, f'{shown(item.value)}: syscall {parsed[1]} ({parsed[0]}) is already '
                      f"listed at {syscalls[parsed]}", "duplicate")
        else:
            syscalls[parsed] = vpath
    return (tuple(name for abi, name in syscalls if abi == "x64"),
            tuple(name for abi, name in syscalls if abi == "i386"))
