"""Validate matchArgs / matchReturnArgs: operator names, operator/type fit, values.

Values are parsed here into the typed form the kernel compiler needs: numbers
(with Tetragon's 0x/0-octal notation and CAP_/IPPROTO_/AF_/TCP_ names), CIDRs,
port ranges, and canonical paths for file-like arguments.
"""

from __future__ import annotations

import ipaddress

from . import limits
from .canonical import canonical_path_value
from .errors import shown
from .context import (Context, check_fields, did_you_mean, expect_map, get_int, get_list, get_str,
                      join, values_of)
from .hookshape import HookShape
from .model import Arg, IntRange, MatchArg, MatchValue, PathValue, PortRange
from .names import ADDRESS_FAMILIES, CAPABILITIES, IP_PROTOCOLS, TCP_STATES
from .validate_lists import LIST_PREFIX
from .vocab import (ADDRESS_OPERATORS, INTEGER_OPERATORS, MAP_OPERATORS, MATCHARG_OPERATOR_ALIASES,
                    MATCHARG_OPERATORS, NETWORK_OPERATORS_BY_TYPE, PORT_OPERATORS,
                    PRIV_PORT_OPERATORS, STRING_OPERATORS, TETRAGON_ONLY_MATCHARG_OPERATORS, ArgKind)
from .yamlnodes import YNode

MATCHARG_NOT_SUPPORTED = {
    "args": "matchArgs.args (selecting arguments by their position in the spec) is not supported "
            "by tetrahost yet; use index",
}

# File-like arguments whose Equal/Prefix values are canonicalized. A dentry only
# knows its path inside one mount, so its values are matched as written.
_CANONICALIZED_TYPES = frozenset({"file", "path", "fd", "linux_binprm"})
_CANONICALIZED_OPERATORS = frozenset({"Equal", "NotEqual", "Prefix", "NotPrefix"})
# Integer arguments whose values may be CAP_* names: a number, or a 64-bit set (1 << number)
_IFNAME_MAX = 15        # IFNAMSIZ - 1: a net_device's name
_CAPABILITY_TYPES = frozenset({"capability", "kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"})


def operators_for(arg: Arg) -> tuple[str, ...]:
    if arg.kind is ArgKind.INTEGER:
        return INTEGER_OPERATORS
    if arg.kind in (ArgKind.STRING, ArgKind.PATH):
        return STRING_OPERATORS
    if arg.kind is ArgKind.NETWORK:
        return NETWORK_OPERATORS_BY_TYPE[arg.base_type]
    return ()


def validate_match_args(ctx: Context, selector: YNode, key: str, path: str, shape: HookShape) -> list[MatchArg]:
    out = []
    items = get_list(ctx, selector, key, path)
    if len(items) > limits.MAX_MATCHARGS_PER_SELECTOR:
        ctx.error(selector.key_line(key), join(path, key), f"{len(items)} {key} entries, the limit is "
                  f"{limits.MAX_MATCHARGS_PER_SELECTOR} per selector", "limit", f"{key} per selector")
    for i, entry in enumerate(items):
        epath = f"{join(path, key)}[{i}]"
        if not expect_map(ctx, entry, epath):
            continue
        match = _validate_entry(ctx, entry, epath, key == "matchReturnArgs", shape)
        if match is not None:
            out.append(match)
    return out


def _validate_entry(ctx: Context, entry: YNode, path: str, is_return: bool, shape: HookShape) -> MatchArg | None:
    errors_before = len(ctx.errors)
    check_fields(ctx, entry, path, ("index", "operator", "values"), MATCHARG_NOT_SUPPORTED)
    arg = _target_arg(ctx, entry, path, is_return, shape)
    written = get_str(ctx, entry, "operator", path, required=True)
    operator = _operator(ctx, entry, path, written)
    if arg is not None and operator:
        allowed = operators_for(arg)
        if operator not in allowed:
            what = "the return value" if is_return else f"argument {arg.index}"
            hint = (f"operators for {arg.type}: {', '.join(allowed)}" if allowed
                    else f"a {arg.type} argument cannot be filtered")
            ctx.error(entry.key_line("operator"), join(path, "operator"),
                      f"operator {written} cannot be used on {what} of type {arg.type} ({hint})",
                      "operator-type", f"{written} on {arg.type}")
            operator = ""
    values = values_of(ctx, entry, path, required=operator not in PRIV_PORT_OPERATORS)
    if operator in PRIV_PORT_OPERATORS and values:
        ctx.warn(entry.key_line("values"), join(path, "values"),
                 f"{operator} takes no values (privileged means port 0-1023); values are ignored")
        values = []
    if arg is not None and operator:
        # strings and paths go to the hook's string-set maps (counted per hook
        # by validate.check_string_sets); other values are inline in the selector
        if (arg.kind not in (ArgKind.STRING, ArgKind.PATH) and operator not in MAP_OPERATORS
                and len(values) > limits.MAX_MATCHARG_VALUES):
            ctx.error(entry.key_line("values"), join(path, "values"), f"{len(values)} values, the limit "
                      f"is {limits.MAX_MATCHARG_VALUES} for a {arg.type} argument", "limit", "matchArgs values")
    parsed = []
    if arg is not None and operator:
        for item, vpath, text in values:
            if operator in MAP_OPERATORS:
                parsed.extend(_map_values(ctx, text, item.line, vpath, arg, shape))
                continue
            value = _parse_value(ctx, text, item.line, vpath, operator, arg)
            if value is not None:
                parsed.append(value)
    if len(ctx.errors) != errors_before or arg is None:
        return None
    position = -1 if is_return else shape.positions[_key_of(entry)]
    return MatchArg(index=_key_of(entry) if not is_return else 0, arg_position=position, operator=operator, operator_written=written,
                    values=tuple(text for _, _, text in values), parsed=tuple(parsed),
                    arg_base_type=arg.base_type, arg_kind=arg.kind, source=ctx.loc(entry, path))


def _key_of(entry: YNode) -> int:
    return entry.get("index").value


def _target_arg(ctx: Context, entry: YNode, path: str, is_return: bool, shape: HookShape) -> Arg | None:
    if is_return:
        get_int(ctx, entry, "index", path, minimum=0, maximum=0)
        if shape.return_arg is None:
            ctx.error(entry.line, path, "matchReturnArgs needs returnArg (the type of the return value)",
                      "invalid", "matchReturnArgs without returnArg")
        return shape.return_arg
    index = get_int(ctx, entry, "index", path, required=True, minimum=0, maximum=limits.MAX_TRACEPOINT_ARG_INDEX)
    if index is None:
        return None
    arg = shape.args.get(index)
    if arg is None and index in shape.rejected:
        return None  # the argument's own error says why
    if arg is None:
        declared = ", ".join(str(i) for i in sorted(shape.args)) or "none"
        if shape.kind == "tracepoint":
            hint = f"a tracepoint's matchArgs index is the position in args; positions: {declared}"
        else:
            hint = f"declared indexes: {declared}"
        ctx.error(entry.key_line("index"), join(path, "index"),
                  f"index {index} does not refer to a declared argument ({hint})", "undeclared-arg")
    return arg


def _operator(ctx: Context, entry: YNode, path: str, written: str) -> str:
    if not written:
        return ""
    line = entry.key_line("operator")
    if written in TETRAGON_ONLY_MATCHARG_OPERATORS:
        ctx.error(line, join(path, "operator"), f"operator {written} is not supported by tetrahost (yet)",
                  "unsupported-operator", written)
        return ""
    operator = MATCHARG_OPERATOR_ALIASES.get(written, written)
    if operator not in MATCHARG_OPERATORS:
        ctx.error(line, join(path, "operator"), f'unknown operator {shown(written)} (expected one of: '
                  f"{', '.join(MATCHARG_OPERATORS)}){did_you_mean(written, MATCHARG_OPERATORS)}",
                  "unknown-operator", written)
        return ""
    return operator


def _parse_value(ctx: Context, text: str, line: int, path: str, operator: str, arg: Arg) -> MatchValue | None:
    def bad(message: str, detail: str) -> None:
        ctx.error(line, path, message, "invalid-value", detail)

    if operator in ADDRESS_OPERATORS:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            return bad(f'{shown(text)} is not an IPv4/IPv6 address or CIDR', "address")
    if operator in PORT_OPERATORS:
        return _port_range(text) or bad(f'{shown(text)} is not a port or port range (0-65535, or min:max)', "port")
    named = {"Protocol": (IP_PROTOCOLS, 0xFFFF, "a protocol number or IPPROTO_* name"),
             "Family": (ADDRESS_FAMILIES, 0xFFFF, "an address family number or AF_* name"),
             "State": (TCP_STATES, 0xFF, "a TCP state number or TCP_* name")}.get(operator)
    if named is not None:
        names, maximum, expected = named
        value = _number_or_name(text, names, maximum)
        return value if value is not None else bad(f'{shown(text)} is not {expected}', operator.lower())
    if arg.kind is ArgKind.INTEGER:
        return _integer(ctx, text, line, path, operator, arg)
    return _string(ctx, text, line, path, operator, arg)


def _map_values(ctx: Context, text: str, line: int, path: str, arg: Arg, shape: HookShape) -> list[IntRange]:
    """An InMap/NotInMap value: a number, "min:max", or "list:NAME" (the
    syscall numbers of a syscall list: Tetragon's way to match raw_syscalls'
    id against a list)."""
    if text.startswith(LIST_PREFIX):
        name = text[len(LIST_PREFIX):]
        if name not in shape.lists:
            known = ", ".join(shape.lists) or "none"
            ctx.error(line, path, f"{shown(text)} names no list of spec.lists (defined: {known})",
                      "unknown-list", name)
            return []
        syscall_list = shape.lists[name]
        if syscall_list is None:
            return []       # the list's own errors say why
        if syscall_list.syscalls32 and arg.base_type != "syscall64":
            ctx.error(line, path, f"list {shown(name)} has 32-bit entries, which only a syscall64 argument "
                      f"tells apart (this one is {arg.type}: i386 dup and x86_64 socket are both 41)",
                      "invalid-value", "32-bit list entries on a plain integer")
            return []
        return [IntRange(nr, nr) for nr in syscall_list.numbers(arg.base_type == "syscall64")]
    low_text, colon, high_text = text.partition(":")
    low = _integer(ctx, low_text, line, path, "InMap", arg)
    high = _integer(ctx, high_text, line, path, "InMap", arg) if colon else low
    if low is None or high is None:
        return []
    low, high = min(low, high), max(low, high)
    if high - low + 1 > limits.MAX_INT_SET_ENTRIES:
        ctx.error(line, path, f"range {shown(text)} holds {high - low + 1} integers, the limit is "
                  f"{limits.MAX_INT_SET_ENTRIES} per hook", "limit", "InMap range")
        return []
    return [IntRange(low, high)]


def _integer(ctx: Context, text: str, line: int, path: str, operator: str, arg: Arg) -> int | None:
    value = parse_int(text)
    if value is None and text in CAPABILITIES and arg.base_type in _CAPABILITY_TYPES:
        number = CAPABILITIES[text]
        value = number if arg.base_type == "capability" else 1 << number
    if value is None:
        ctx.error(line, path, f'{shown(text)} is not a number (decimal, 0x hex or 0 octal)', "invalid-value", "number")
        return None
    low = -(1 << (arg.bits - 1)) if arg.signed and operator != "Mask" else 0
    high = (1 << arg.bits) - 1
    if operator in ("GreaterThan", "LessThan") and arg.bits == 64:
        high = (1 << 63) - 1    # the kernel side compares 64-bit values as signed
    if not low <= value <= high:
        ctx.error(line, path, f"{value} does not fit a {arg.type} argument (range {low} to {high}"
                  f"{' for Mask' if operator == 'Mask' else ''})", "invalid-value", "number range")
        return None
    return value


def _string(ctx: Context, text: str, line: int, path: str, operator: str, arg: Arg) -> str | PathValue | None:
    if not text:
        ctx.error(line, path, "an empty string never matches", "invalid-value", "empty string")
        return None
    length_limit = {"Prefix": limits.MAX_PREFIX_LENGTH, "NotPrefix": limits.MAX_PREFIX_LENGTH,
                    "Postfix": limits.MAX_POSTFIX_LENGTH, "NotPostfix": limits.MAX_POSTFIX_LENGTH
                    }.get(operator, limits.MAX_EQUAL_STRING_LENGTH)
    if len(text) > length_limit:
        ctx.error(line, path, f"value is {len(text)} characters long, the limit for {operator} is "
                  f"{length_limit}", "limit", f"{operator} length")
        return None
    if arg.base_type == "net_device" and operator in ("Equal", "NotEqual") and len(text.encode()) > _IFNAME_MAX:
        ctx.error(line, path, f"{shown(text)} is {len(text.encode())} bytes long; an interface name has at "
                  f"most {_IFNAME_MAX}, so it never matches", "invalid-value", "interface name length")
        return None
    if arg.kind is not ArgKind.PATH:
        return text
    if arg.base_type in _CANONICALIZED_TYPES and operator in _CANONICALIZED_OPERATORS:
        if not text.startswith("/"):
            ctx.error(line, path, f'a {arg.type} is matched by its full path, {shown(text)} is not absolute',
                      "invalid-value", "relative path")
            return None
        return canonical_path_value(ctx, text, line, path)
    return PathValue(text, text)


def parse_int(text: str) -> int | None:
    """Tetragon's number notation: decimal, 0x hex, 0-prefixed octal, optional sign."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    if body[:1] in "+-":
        body = body[1:]
    if not body or len(body) > 80 or not body.isascii() or not body.replace("x", "").replace("X", "").isalnum():
        return None
    try:
        if body[:2] in ("0x", "0X"):
            return sign * int(body[2:], 16)
        if body[:2] in ("0o", "0O"):
            return sign * int(body[2:], 8)
        if len(body) > 1 and body.startswith("0"):
            return sign * int(body[1:], 8)
        return sign * int(body, 10)
    except ValueError:
        return None


def _number_or_name(text: str, names: dict[str, int], maximum: int) -> int | None:
    if text in names:
        return names[text]
    value = parse_int(text)
    return value if value is not None and 0 <= value <= maximum else None


def _port_range(text: str) -> PortRange | None:
    low_text, _, high_text = text.partition(":")
    if not all(t.isascii() and t.isdigit() and len(t) <= 5 for t in (low_text, high_text or low_text)):
        return None
    low, high = int(low_text), int(high_text or low_text)
    if not 0 <= low <= high <= 65535:
        return None
    return PortRange(low, high)
