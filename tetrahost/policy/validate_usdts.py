"""Validate `spec.usdts`: USDT probe points (<sys/sdt.h>) of user-space programs.

One entry names a binary (`path`) and one point in it by `provider` and
`name`, as its `.note.stapsdt` lists them.  `args[].index` is the position
of the point's argument (0 = the first value given to STAP_PROBEn/DTRACE_PROBEn),
read wherever the compiler left it (register, constant or memory, from the
note); pointers among them are the program's memory, so as for uprobes only
integer, string, char_buf and nop types apply.  Selectors and actions are the
uprobe ones plus `Set` (argIndex/argValue: write an argument that is in
memory).  The binary is read when the hook attaches, not here: a policy can
name a program that is installed later.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .context import Context, check_fields, expect_map, get_list, get_str, join
from .errors import shown
from .model import Hook
from .validate_uprobes import binary_path, probe_body
from .yamlnodes import YNode

USDT_FIELDS = ("path", "provider", "name", "args", "selectors", "message", "tags")
USDT_NOT_SUPPORTED = {
    "btfPath": "btfPath is not supported by tetrahost yet",
}
# <sys/sdt.h> pastes provider and name into C identifiers (the semaphore's name)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME_LENGTH = 256


def validate_usdts(ctx: Context, spec: YNode, path: str) -> list[Hook]:
    hooks: list[Hook] = []
    for i, node in enumerate(get_list(ctx, spec, "usdts", path)):
        hook = _validate_usdt(ctx, node, f"{join(path, 'usdts')}[{i}]")
        if hook is not None:
            hooks.append(hook)
    return hooks


def _validate_usdt(ctx: Context, node: YNode, path: str) -> Hook | None:
    if not expect_map(ctx, node, path):
        return None
    errors_before = len(ctx.errors)
    check_fields(ctx, node, path, USDT_FIELDS, USDT_NOT_SUPPORTED)
    binary = binary_path(ctx, node, path)
    provider = _identifier(ctx, node, path, "provider")
    name = _identifier(ctx, node, path, "name")

    base = probe_body(ctx, node, path, "usdt", binary)
    if len(ctx.errors) != errors_before:
        return None
    return replace(base, name=f"{provider}:{name}", provider=provider, usdt_name=name, source=ctx.loc(node, path))


def _identifier(ctx: Context, node: YNode, path: str, key: str) -> str:
    value = get_str(ctx, node, key, path, required=True)
    if value and (len(value) > MAX_NAME_LENGTH or not _IDENTIFIER.match(value)):
        ctx.error(node.key_line(key), join(path, key), f"{shown(value)} is not a USDT {key} (a C identifier, "
                  "as <sys/sdt.h> writes it)", "invalid-name", key)
        return ""
    return value
