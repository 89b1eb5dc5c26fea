"""Shared plumbing for validators: error collection and typed field access.

Validators never stop at the first problem: they record it here and carry on
with what they can still check, so a user sees every error of a file at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable

from .errors import Location, PolicyError, PolicyWarning, shown
from .yamlnodes import YNode

# Fields of Kubernetes object/pod scoping: meaningless on a plain host, so
# rejected with one clear message wherever they appear.
KUBERNETES_ONLY_FIELDS = frozenset({
    "podSelector", "containerSelector", "hostSelector", "matchWorkloads",
    "namespaceSelector", "matchPodLabels", "matchLabels", "matchExpressions",
})


@dataclass
class Context:
    file: str  # as shown in messages
    root: str = "/"  # host root for path canonicalization
    errors: list[PolicyError] = field(default_factory=list)
    warnings: list[PolicyWarning] = field(default_factory=list)
    follow_children_sections: int = 0
    canonical_paths: dict = field(default_factory=dict)  # path value -> PathValue
    server_set: dict = field(default_factory=dict)       # field path -> first line (see below)

    def error(self, line: int, path: str, message: str, code: str = "invalid",
              detail: str = "") -> None:
        self.errors.append(PolicyError(self.file, line, path, message, code, detail))

    def warn(self, line: int, path: str, message: str, code: str = "warning") -> None:
        self.warnings.append(PolicyWarning(self.file, line, path, message, code))

    def note_server_set(self, node: YNode, path: str, keys: Iterable[str]) -> None:
        """Remember the fields of `keys` present in `node`: fields a Kubernetes
        API server sets (an exported policy), ignored with one warning per file."""
        for key in keys:
            if node.get(key) is not None:
                self.server_set.setdefault(join(path, key), node.key_line(key))

    def warn_server_set(self) -> None:
        """The one warning of a file that carried server-set fields."""
        if not self.server_set:
            return
        line = min(self.server_set.values())
        names = ", ".join(sorted(self.server_set, key=lambda k: (self.server_set[k], k)))
        self.warn(line, "", f"ignored the fields a Kubernetes API server sets (an exported object): "
                  f"{names}", "kubernetes-fields")

    def loc(self, node: YNode, path: str) -> Location:
        return Location(self.file, node.line, path)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def quoted_list(names: Iterable[str]) -> str:
    return ", ".join(names)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f'; did you mean "{close[0]}"?' if close else ""


def expect_map(ctx: Context, node: YNode | None, path: str) -> bool:
    if node is None:
        return False
    if node.kind != "map":
        ctx.error(node.line, path, f"expected a mapping, got {node.describe()}", "type")
        return False
    for key, line in node.duplicate_keys:
        ctx.error(line, join(path, key), "duplicate field", "duplicate-field", key)
    for key, line in node.bad_keys:
        ctx.error(line, path, f"field names must be strings, got {key}", "type")
    return True


def check_fields(ctx: Context, node: YNode, path: str, allowed: Iterable[str],
                 not_supported: dict[str, str] | None = None) -> None:
    """Reject every field of `node` that is not in `allowed`.

    `not_supported` maps field names Tetragon knows (and tetrahost does not
    implement) to the message to give; Kubernetes-only fields get their own
    message; anything else is an unknown field, as Tetragon's CRD is strict.
    """
    allowed = tuple(allowed)
    not_supported = not_supported or {}
    for key, (line, _value) in node.entries.items():
        if key in allowed:
            continue
        field_path = join(path, key)
        if key in KUBERNETES_ONLY_FIELDS:
            ctx.error(line, field_path,
                      f"{key} is a Kubernetes-only field, tetrahost runs on plain hosts",
                      "kubernetes-only", key)
        elif key in not_supported:
            ctx.error(line, field_path, not_supported[key], "not-supported", key)
        else:
            ctx.error(line, field_path,
                      f'unknown field {shown(key)} (expected one of: {quoted_list(allowed)})'
                      f"{did_you_mean(key, (*allowed, *not_supported))}", "unknown-field", key)


def get_str(ctx: Context, node: YNode, key: str, path: str, required: bool = False,
            default: str = "") -> str:
    child = node.get(key)
    if child is None:
        if required:
            ctx.error(node.line, join(path, key), "required field is missing", "missing", key)
        return default
    if child.kind != "scalar" or not isinstance(child.value, str):
        # Numbers written without quotes are fine where a string is expected
        # (`argFqdn: 1234`), booleans and lists are not.
        if child.kind == "scalar" and isinstance(child.value, int) and not isinstance(child.value, bool):
            return str(child.value)
        ctx.error(child.line, join(path, key), f"expected a string, got {child.describe()}", "type")
        return default
    if required and not child.value:
        ctx.error(child.line, join(path, key), "must not be empty", "empty")
        return default
    if "\0" in child.value:
        ctx.error(child.line, join(path, key), "a NUL byte (\\0) is not allowed here", "invalid-value")
        return default
    return child.value


def get_bool(ctx: Context, node: YNode, key: str, path: str, default: bool = False) -> bool:
    child = node.get(key)
    if child is None:
        return default
    if child.kind != "scalar" or not isinstance(child.value, bool):
        ctx.error(child.line, join(path, key),
                  f"expected true or false, got {child.describe()}", "type")
        return default
    return child.value


def get_int(ctx: Context, node: YNode, key: str, path: str, required: bool = False,
            minimum: int | None = None, maximum: int | None = None) -> int | None:
    child = node.get(key)
    if child is None:
        if required:
            ctx.error(node.line, join(path, key), "required field is missing", "missing", key)
        return None
    value = child.value
    if child.kind != "scalar" or isinstance(value, bool) or not isinstance(value, int):
        ctx.error(child.line, join(path, key), f"expected an integer, got {child.describe()}", "type")
        return None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        ctx.error(child.line, join(path, key), f"{value} is out of range (must be {bounds})", "range")
        return None
    return value


def get_list(ctx: Context, node: YNode, key: str, path: str, required: bool = False) -> list[YNode]:
    child = node.get(key)
    if child is None or (child.kind == "scalar" and child.value is None):
        if required:
            ctx.error(node.line, join(path, key), "required field is missing", "missing", key)
        return []
    if child.kind != "seq":
        ctx.error(child.line, join(path, key), f"expected a list, got {child.describe()}", "type")
        return []
    return child.items


def scalar_text(ctx: Context, node: YNode, path: str) -> str | None:
    """A list value as text: strings as is, YAML numbers as their decimal text."""
    if node.kind == "scalar" and isinstance(node.value, str):
        return node.value
    if node.kind == "scalar" and isinstance(node.value, int) and not isinstance(node.value, bool):
        return str(node.value)
    ctx.error(node.line, path, f"expected a string or number, got {node.describe()}", "type")
    return None


def choice(ctx: Context, node: YNode, key: str, path: str, choices: Iterable[str],
           required: bool = True, default: str = "", what: str = "value",
           not_supported: Iterable[str] = ()) -> str:
    """Read an enum-like string field; empty string when missing or invalid."""
    choices = tuple(choices)
    value = get_str(ctx, node, key, path, required=required, default="\0")
    if value == "\0":
        return default
    if value in choices:
        return value
    line = node.get(key).line
    if value in set(not_supported):
        ctx.error(line, join(path, key), f'{what} {shown(value)} is not supported by tetrahost (yet)',
                  "not-supported", f"{what} {value}")
    else:
        ctx.error(line, join(path, key),
                  f'unknown {what} {shown(value)} (expected one of: {quoted_list(choices)})'
                  f"{did_you_mean(value, choices)}", "unknown-value", what)
    return ""


def values_of(ctx: Context, entry: YNode, path: str, required: bool = True) -> list[tuple[YNode, str, str]]:
    """(node, path, text) for each item of entry.values; numbers become their text."""
    out = []
    items = get_list(ctx, entry, "values", path, required=required)
    if required and entry.get("values") is not None and not items:
        ctx.error(entry.get("values").line, join(path, "values"), "values must not be empty", "invalid")
    for i, item in enumerate(items):
        vpath = f"{join(path, 'values')}[{i}]"
        text = scalar_text(ctx, item, vpath)
        if text is not None:
            out.append((item, vpath, text))
    return out
