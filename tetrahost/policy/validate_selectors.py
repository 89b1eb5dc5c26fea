"""Validate `selectors` of a hook: structure, process filters (binaries, PIDs,
namespaces, capabilities and their changes). matchArgs and actions have their
own modules.
"""

from __future__ import annotations

from . import limits
from .canonical import canonical_path_value
from .errors import shown
from .context import (Context, check_fields, choice, expect_map, get_bool, get_list, join,
                      values_of)
from .hookshape import HookShape
from .model import (MatchBinaries, MatchCapabilities, MatchNamespace, MatchNamespaceChanges,
                    MatchPIDs, PathValue, Selector)
from .names import CAPABILITIES
from .validate_actions import validate_actions
from .validate_matchargs import validate_match_args
from .vocab import (MAP_OPERATORS, ArgKind, BINARY_OPERATORS, CAPABILITY_SETS, FOLLOW_CHILDREN_OPERATORS, HOST_NS,
                    NAMESPACE_KINDS, SET_OPERATORS)
from .yamlnodes import YNode

SELECTOR_FIELDS = ("matchArgs", "matchReturnArgs", "matchBinaries", "matchPIDs", "matchNamespaces",
                   "matchCapabilities", "matchNamespaceChanges", "matchCapabilityChanges",
                   "matchActions", "matchReturnActions")
SELECTOR_NOT_SUPPORTED = {
    "matchData": "matchData is not supported by tetrahost yet",
    "matchParentBinaries": "matchParentBinaries is not supported by tetrahost yet",
}


def validate_selectors(ctx: Context, hook: YNode, hook_path: str, shape: HookShape) -> list[Selector]:
    items = get_list(ctx, hook, "selectors", hook_path)
    path = join(hook_path, "selectors")
    if len(items) > limits.MAX_SELECTORS_PER_HOOK:
        ctx.error(hook.key_line("selectors"), path, f"{len(items)} selectors, the limit is "
                  f"{limits.MAX_SELECTORS_PER_HOOK} per hook", "limit", "selectors per hook")
    selectors = []
    for i, node in enumerate(items):
        selector = _validate_selector(ctx, node, f"{path}[{i}]", i, shape)
        if selector is not None:
            selectors.append(selector)
    return selectors


def _validate_selector(ctx: Context, node: YNode, path: str, index: int, shape: HookShape) -> Selector | None:
    if node.kind == "scalar" and node.value is None:
        node = YNode("map", node.line)  # "- " alone: an empty selector, matches everything
    if not expect_map(ctx, node, path):
        return None
    check_fields(ctx, node, path, SELECTOR_FIELDS, SELECTOR_NOT_SUPPORTED)
    for key in ("matchReturnArgs", "matchReturnActions"):
        if node.get(key) is not None and not (shape.kind == "kprobe" and shape.return_):
            ctx.error(node.key_line(key), join(path, key), f"{key} needs a kprobe with return: true",
                      "invalid", key)
    return Selector(
        index=index,
        match_args=tuple(validate_match_args(ctx, node, "matchArgs", path, shape)),
        match_return_args=tuple(validate_match_args(ctx, node, "matchReturnArgs", path, shape)),
        match_binaries=tuple(_match_binaries(ctx, node, path)),
        match_pids=tuple(_match_pids(ctx, node, path)),
        match_namespaces=tuple(_match_namespaces(ctx, node, path)),
        match_capabilities=tuple(_match_capabilities(ctx, node, "matchCapabilities", path)),
        match_namespace_changes=tuple(_match_namespace_changes(ctx, node, path)),
        match_capability_changes=tuple(_match_capabilities(ctx, node, "matchCapabilityChanges", path)),
        match_actions=tuple(validate_actions(ctx, node, "matchActions", path, shape)),
        match_return_actions=tuple(validate_actions(ctx, node, "matchReturnActions", path, shape)),
        source=ctx.loc(node, path),
    )


def _entries(ctx: Context, node: YNode, key: str, path: str):
    """Yield (entry node, entry path) for each well-formed mapping under `key`."""
    for i, entry in enumerate(get_list(ctx, node, key, path)):
        epath = f"{join(path, key)}[{i}]"
        if expect_map(ctx, entry, epath):
            yield entry, epath


def _match_binaries(ctx: Context, node: YNode, path: str) -> list[MatchBinaries]:
    out = []
    entries = list(_entries(ctx, node, "matchBinaries", path))
    if len(entries) > 1:
        ctx.error(entries[1][0].line, entries[1][1], "only one matchBinaries entry per selector is "
                  "supported (use another selector to OR, or put all paths in one entry)",
                  "limit", "matchBinaries per selector")
    for entry, epath in entries:
        check_fields(ctx, entry, epath, ("operator", "values", "followChildren"))
        operator = choice(ctx, entry, "operator", epath, BINARY_OPERATORS, what="operator")
        follow = get_bool(ctx, entry, "followChildren", epath)
        if follow:
            ctx.follow_children_sections += 1
            if operator and operator not in FOLLOW_CHILDREN_OPERATORS:
                ctx.error(entry.key_line("followChildren"), join(epath, "followChildren"),
                          f"followChildren works with In and NotIn, not {operator}", "invalid")
            if ctx.follow_children_sections == limits.MAX_FOLLOW_CHILDREN_SECTIONS + 1:
                ctx.error(entry.key_line("followChildren"), join(epath, "followChildren"),
                          f"more than {limits.MAX_FOLLOW_CHILDREN_SECTIONS} matchBinaries with "
                          "followChildren in one policy file", "limit", "followChildren sections")
        values = []
        for item, vpath, text in values_of(ctx, entry, epath):
            if operator in ("Postfix", "NotPostfix"):
                if not text or len(text) > limits.MAX_POSTFIX_LENGTH:
                    ctx.error(item.line, vpath, f"a postfix must be 1 to {limits.MAX_POSTFIX_LENGTH} "
                              "characters long", "limit", "postfix length")
                values.append(PathValue(text, text))
                continue
            if not text.startswith("/"):
                ctx.error(item.line, vpath, f'matchBinaries values are absolute paths of executables, '
                          f'got {shown(text)}', "invalid", "relative binary path")
                continue
            if operator in ("Prefix", "NotPrefix") and len(text) > limits.MAX_PREFIX_LENGTH:
                ctx.error(item.line, vpath, f"a prefix can be at most {limits.MAX_PREFIX_LENGTH} "
                          "characters long", "limit", "prefix length")
            values.append(canonical_path_value(ctx, text, item.line, vpath))
        if operator:
            out.append(MatchBinaries(operator, tuple(values), follow, ctx.loc(entry, epath)))
    return out


def _match_pids(ctx: Context, node: YNode, path: str) -> list[MatchPIDs]:
    out = []
    for entry, epath in _entries(ctx, node, "matchPIDs", path):
        check_fields(ctx, entry, epath, ("operator", "values", "followForks", "isNamespacePID"))
        operator = choice(ctx, entry, "operator", epath, SET_OPERATORS, what="operator")
        values = values_of(ctx, entry, epath)
        if len(values) > limits.MAX_PID_VALUES:
            ctx.error(entry.key_line("values"), join(epath, "values"), f"{len(values)} PIDs, the limit "
                      f"is {limits.MAX_PID_VALUES} per matchPIDs entry", "limit", "PID values")
        pids = []
        for item, vpath, text in values:
            if not _is_u32(text):
                ctx.error(item.line, vpath, f'{shown(text)} is not a PID (expected a number from 0 to 4294967295)',
                          "invalid-value", "PID")
            else:
                pids.append(int(text))
        out.append(MatchPIDs(operator, tuple(pids), get_bool(ctx, entry, "followForks", epath),
                             get_bool(ctx, entry, "isNamespacePID", epath), ctx.loc(entry, epath)))
    return out


def _match_namespaces(ctx: Context, node: YNode, path: str) -> list[MatchNamespace]:
    out = []
    seen: set[str] = set()
    entries = list(_entries(ctx, node, "matchNamespaces", path))
    if len(entries) > limits.MAX_NAMESPACES_PER_SELECTOR:
        ctx.error(node.key_line("matchNamespaces"), join(path, "matchNamespaces"),
                  f"{len(entries)} namespace entries, the limit is {limits.MAX_NAMESPACES_PER_SELECTOR} "
                  "(what the kernel side evaluates per selector)",
                  "limit", "namespaces per selector")
    for entry, epath in entries:
        check_fields(ctx, entry, epath, ("namespace", "operator", "values"))
        kind = choice(ctx, entry, "namespace", epath, NAMESPACE_KINDS, what="namespace")
        operator = choice(ctx, entry, "operator", epath, SET_OPERATORS, what="operator")
        if kind in seen:
            ctx.error(entry.key_line("namespace"), join(epath, "namespace"),
                      f"namespace {kind} appears twice in this selector", "duplicate")
        seen.add(kind)
        values = values_of(ctx, entry, epath)
        if len(values) > limits.MAX_NAMESPACE_VALUES:
            ctx.error(entry.key_line("values"), join(epath, "values"), f"{len(values)} values, the limit "
                      f"is {limits.MAX_NAMESPACE_VALUES} per namespace", "limit", "namespace values")
        parsed: list = []
        for item, vpath, text in values:
            if text == HOST_NS:
                parsed.append(HOST_NS)
            elif _is_u32(text):
                parsed.append(int(text))
            else:
                ctx.error(item.line, vpath, f'{shown(text)} is not a namespace inode number or "{HOST_NS}"',
                          "invalid-value", "namespace")
        if kind and operator:
            out.append(MatchNamespace(kind, operator, tuple(parsed), ctx.loc(entry, epath)))
    return out


def _match_capabilities(ctx: Context, node: YNode, key: str, path: str) -> list[MatchCapabilities]:
    out = []
    for entry, epath in _entries(ctx, node, key, path):
        check_fields(ctx, entry, epath, ("type", "operator", "values", "isNamespaceCapability"))
        cap_type = choice(ctx, entry, "type", epath, CAPABILITY_SETS, required=False,
                          default="Effective", what="capability set")
        operator = choice(ctx, entry, "operator", epath, SET_OPERATORS, what="operator")
        names, numbers = [], []
        for item, vpath, text in values_of(ctx, entry, epath):
            if text in CAPABILITIES:
                names.append(text)
                numbers.append(CAPABILITIES[text])
            elif text.upper() in CAPABILITIES:
                ctx.error(item.line, vpath, f'capability names are upper case: {shown(text.upper())}',
                          "invalid-value", "capability")
            else:
                ctx.error(item.line, vpath, f'unknown capability {shown(text)} (expected a CAP_* name such '
                          'as CAP_SYS_ADMIN)', "invalid-value", "capability")
        if cap_type and operator:
            out.append(MatchCapabilities(cap_type, operator, tuple(names), tuple(numbers),
                                         get_bool(ctx, entry, "isNamespaceCapability", epath),
                                         ctx.loc(entry, epath)))
    return out


def _match_namespace_changes(ctx: Context, node: YNode, path: str) -> list[MatchNamespaceChanges]:
    out = []
    for entry, epath in _entries(ctx, node, "matchNamespaceChanges", path):
        check_fields(ctx, entry, epath, ("operator", "values"))
        operator = choice(ctx, entry, "operator", epath, SET_OPERATORS, what="operator")
        kinds = []
        for item, vpath, text in values_of(ctx, entry, epath):
            if text in NAMESPACE_KINDS:
                kinds.append(text)
            else:
                ctx.error(item.line, vpath, f'unknown namespace {shown(text)} (expected one of: '
                          f"{', '.join(NAMESPACE_KINDS)})", "invalid-value", "namespace")
        if operator:
            out.append(MatchNamespaceChanges(operator, tuple(kinds), ctx.loc(entry, epath)))
    return out


def _is_u32(text: str) -> bool:
    """A decimal number from 0 to 2**32-1 (ASCII digits only: str.isdigit
    also takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= 0xFFFFFFFF

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
    integers = sum(v.count for sel in selectors for ma in sel.match_args if ma.operator in MAP_OPERATORS
                   for v in ma.parsed)
    if integers > limits.MAX_INT_SET_ENTRIES:
        ctx.error(node.key_line("selectors"), join(path, "selectors"),
                  f"{integers} integers in this hook's InMap/NotInMap values (ranges and lists expanded), "
                  f"the limit is {limits.MAX_INT_SET_ENTRIES} per hook", "limit", "InMap values per hook")
    for kind, count in counts.items():
        if count > limits.MAX_STRING_SET_ENTRIES:
            ctx.error(node.key_line("selectors"), join(path, "selectors"),
                      f"{count} {kind} string values in this hook's selectors (matchArgs and "
                      f"matchBinaries together), the limit is {limits.MAX_STRING_SET_ENTRIES} per hook",
                      "limit", "string values per hook")
