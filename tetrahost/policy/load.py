"""Read TracingPolicy files: YAML with line numbers, one or more documents each.

`load_file` returns the policies of a file or raises PolicyLoadError carrying
every error found (not just the first). `load_text` does the same without the
file system, returning errors instead of raising, for callers that collect.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .context import Context, check_fields, expect_map, get_str, join
from .errors import PolicyError, PolicyLoadError, PolicyWarning
from .model import Policy
from .validate import validate_spec
from .yamlnodes import YamlSyntaxError, YNode, parse_documents

API_VERSION = "cilium.io/v1alpha1"
KIND = "TracingPolicy"
NAMESPACED_KIND = "TracingPolicyNamespaced"

METADATA_FIELDS = ("name", "annotations", "labels")
_SERVER_SET = "is set by a Kubernetes API server, not by policy authors; remove it"
METADATA_NOT_SUPPORTED = {
    "namespace": "namespace is a Kubernetes-only field, tetrahost runs on plain hosts",
    **{key: f"{key} {_SERVER_SET}" for key in (
        "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
        "deletionGracePeriodSeconds", "managedFields", "selfLink", "ownerReferences",
        "finalizers", "generateName")},
}
# Kubernetes object names (DNS-1123 subdomain): policy names end up in event
# fields, journald fields and file names, so keep Tetragon's rule.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MAX_NAME = 253


@dataclass
class LoadResult:
    file: str
    policies: list[Policy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    warnings: list[PolicyWarning] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def load_text(text: str, file: str = "<policy>", root: str = "/") -> LoadResult:
    """Parse and validate every document of `text`; never raises for policy problems."""
    ctx = Context(file=file, root=root)
    result = LoadResult(file)
    seen_names: dict[str, int] = {}
    documents = 0
    try:
        for number, (line, root_node) in enumerate(parse_documents(text)):
            if not (root_node.kind == "scalar" and root_node.value is None):
                documents += 1  # an empty document ("---" alone) does not count
            policy = _load_document(ctx, root_node, number)
            if policy is None:
                continue
            name_line = root_node.get("metadata").key_line("name")
            if policy.name in seen_names:
                ctx.error(name_line, "metadata.name", f'policy "{policy.name}" is already defined '
                          f"in this file (line {seen_names[policy.name]})", "duplicate")
                continue
            seen_names[policy.name] = name_line
            result.policies.append(policy)
    except YamlSyntaxError as exc:
        ctx.error(exc.line, "", exc.message, "yaml-syntax")
    if documents == 0 and not ctx.errors:
        ctx.error(1, "", "the file holds no policy (expected a TracingPolicy document)", "empty")
    # Report in file order, whatever order the validators ran in.
    result.errors = sorted(ctx.errors, key=lambda e: e.line)
    result.warnings = sorted(ctx.warnings, key=lambda w: w.line)
    if result.errors:
        result.policies = []  # a file is accepted or rejected as a whole
    return result


def load_file(path: str | os.PathLike, root: str = "/", display_name: str | None = None) -> list[Policy]:
    """Policies of one file; raises PolicyLoadError listing all its errors."""
    result = load_path(path, root=root, display_name=display_name)
    if result.errors:
        raise PolicyLoadError(result.file, result.errors, result.warnings)
    return result.policies


def load_path(path: str | os.PathLike, root: str = "/", display_name: str | None = None) -> LoadResult:
    """Like load_text for a file; an unreadable file is an error in the result."""
    name = display_name or os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LoadResult(name, errors=[PolicyError(name, 0, "", f"cannot read the file: {reason}", "unreadable")])
    return load_text(text, file=name, root=root)


def _load_document(ctx: Context, node: YNode, number: int) -> Policy | None:
    if node.kind == "scalar" and node.value is None:
        return None  # an empty document between "---" separators
    if not expect_map(ctx, node, ""):
        return None
    errors_before = len(ctx.errors)
    check_fields(ctx, node, "", ("apiVersion", "kind", "metadata", "spec"), {"status": "status is set by Kubernetes; remove it"})
    api_version = get_str(ctx, node, "apiVersion", "", required=True)
    if api_version and api_version != API_VERSION:
        ctx.error(node.key_line("apiVersion"), "apiVersion", f'unsupported apiVersion "{api_version}" '
                  f'(expected "{API_VERSION}")', "api-version", api_version)
    kind = get_str(ctx, node, "kind", "", required=True)
    if kind == NAMESPACED_KIND:
        ctx.error(node.key_line("kind"), "kind", f"{NAMESPACED_KIND}: namespaced policies are a Kubernetes "
                  f"concept, tetrahost runs on plain hosts (use kind: {KIND})", "kubernetes-only", NAMESPACED_KIND)
    elif kind and kind != KIND:
        ctx.error(node.key_line("kind"), "kind", f'unsupported kind "{kind}" (expected "{KIND}")', "kind", kind)
    name = _metadata_name(ctx, node)
    spec = node.get("spec")
    if spec is None:
        ctx.error(node.line, "spec", "required field is missing", "missing", "spec")
        return None
    hooks, mode, options = validate_spec(ctx, spec, "spec")
    if len(ctx.errors) != errors_before:
        return None
    return Policy(name=name, file=ctx.file, mode=mode, hooks=tuple(hooks), options=options,
                  document=number, source=ctx.loc(node, ""))


def _metadata_name(ctx: Context, node: YNode) -> str:
    metadata = node.get("metadata")
    if metadata is None:
        ctx.error(node.line, "metadata", "required field is missing (metadata.name names the policy)",
                  "missing", "metadata")
        return ""
    if not expect_map(ctx, metadata, "metadata"):
        return ""
    check_fields(ctx, metadata, "metadata", METADATA_FIELDS, METADATA_NOT_SUPPORTED)
    for key in ("annotations", "labels"):
        child = metadata.get(key)
        if child is not None and expect_map(ctx, child, join("metadata", key)):
            for entry_key, (line, value) in child.entries.items():
                if value.kind != "scalar" or not isinstance(value.value, str):
                    ctx.error(line, f"metadata.{key}.{entry_key}", f"expected a string, got {value.describe()}", "type")
    name = get_str(ctx, metadata, "name", "metadata", required=True)
    if name and (len(name) > _MAX_NAME or not _NAME.match(name)):
        ctx.error(metadata.key_line("name"), "metadata.name", f'"{name}" is not a valid policy name (lower '
                  "case letters, digits, '-' and '.', starting and ending with a letter or digit)",
                  "invalid-name")
    return name
