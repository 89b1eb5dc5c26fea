"""Read TracingPolicy files: YAML with line numbers, one or more documents each.

`load_file` returns the policies of a file or raises PolicyLoadError carrying
every error found (not just the first). `load_text` does the same without the
file system, returning errors instead of raising, for callers that collect.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field, replace

from . import limits
from .context import Context, check_fields, expect_map, get_str, join
from .errors import PolicyError, PolicyLoadError, PolicyWarning, clip, shown
from .model import Policy
from .validate import validate_spec
from .yamlnodes import YamlSyntaxError, YNode, parse_documents

API_VERSION = "cilium.io/v1alpha1"
KIND = "TracingPolicy"
NAMESPACED_KIND = "TracingPolicyNamespaced"

# Fields a Kubernetes API server writes into an object: a policy exported with
# `kubectl get tracingpolicy -o yaml` carries them.  Tetragon's agent ignores
# them, so do we, with one warning per file naming them (KubernetesFields).
SERVER_SET_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp",
                       "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                       "selfLink", "ownerReferences", "finalizers", "generateName")
SERVER_SET_TOP = ("status",)
METADATA_FIELDS = ("name", "annotations", "labels") + SERVER_SET_METADATA
METADATA_NOT_SUPPORTED = {
    "namespace": "namespace is a Kubernetes-only field, tetrahost runs on plain hosts "
                 "(TracingPolicy is cluster-scoped)",
}
# Tetragon checks metadata.name with Kubernetes' own object-meta validation
# (pkg/tracingpolicy: ValidateObjectMeta with NameIsDNSSubdomain), for policy
# files as well as for cluster objects: a DNS-1123 subdomain, i.e. '.'-separated
# labels of lower case letters, digits and '-', each starting and ending with a
# letter or digit, 253 characters at most.  Names are never used as file or pin
# names here (pins are named by hook id), so no rule of our own is added.
_NAME_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME = re.compile(rf"^{_NAME_LABEL}(\.{_NAME_LABEL})*$")
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
                ctx.error(name_line, "metadata.name", f'policy {shown(policy.name)} is already defined '
                          f"in this file (line {seen_names[policy.name]})", "duplicate")
                continue
            seen_names[policy.name] = name_line
            result.policies.append(policy)
    except YamlSyntaxError as exc:
        ctx.error(exc.line, exc.path, exc.message, "yaml-syntax")
    except Exception as exc:  # noqa: BLE001 - a bug here must reject one file, not stop the caller
        ctx.error(0, "", internal_error(exc), "internal")
    if documents == 0 and not ctx.errors:
        ctx.error(1, "", "the file holds no policy (expected a TracingPolicy document)", "empty")
    ctx.warn_server_set()
    # Report in file order, whatever order the validators ran in.
    result.errors = sorted(ctx.errors, key=lambda e: e.line)
    result.warnings = sorted(ctx.warnings, key=lambda w: w.line)
    if result.errors:
        result.policies = []  # a file is accepted or rejected as a whole
    return result


def internal_error(exc: BaseException) -> str:
    """The message for an unexpected exception while handling a policy file:
    its type and first line, clipped (no traceback, no file content)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"internal error: {type(exc).__name__}" + (f": {clip(first, 120)}" if first else "")


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
        text = read_policy_file(path, display_name=name)
    except PolicyError as exc:
        return LoadResult(name, errors=[exc])
    except Exception as exc:  # noqa: BLE001 - e.g. a path with a NUL byte: reject, do not raise
        return LoadResult(name, errors=[PolicyError(name, 0, "", internal_error(exc), "internal")])
    return load_text(text, file=name, root=root)


def read_policy_file(path: str | os.PathLike, display_name: str | None = None,
                     max_bytes: int = limits.MAX_POLICY_FILE_BYTES) -> str:
    """The text of a policy file, read within bounds (read_policy_bytes); raises PolicyError."""
    name = display_name or os.fspath(path)
    data = read_policy_bytes(path, name, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # say where, never what: the bytes may be anything (a binary, a key)
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(name, line, "", f"the file is not UTF-8 text (invalid byte at offset {exc.start})",
                          "unreadable") from None


def read_policy_bytes(path: str | os.PathLike, name: str, max_bytes: int = limits.MAX_POLICY_FILE_BYTES) -> bytes:
    """The bytes of a policy file, read within bounds; raises PolicyError
    (code "missing" when the name does not exist: a directory watch skips it).

    Only a regular file is read (a symlink is followed to one): a FIFO would
    block, a device (/dev/zero) never ends, /proc files lie about their size.
    The path is checked with stat before it is opened (non-blocking, so a
    FIFO swapped in meanwhile cannot block) and the opened descriptor again
    with fstat, so what is checked is what is read; at most max_bytes are read.
    """
    def refuse(message: str, code: str = "unreadable") -> PolicyError:
        return PolicyError(name, 0, "", message, code)

    def check_regular(mode: int) -> None:
        if not stat.S_ISREG(mode):
            link = " (through a symbolic link)" if os.path.islink(path) else ""
            raise refuse(f"not a regular file{link}: it is {_file_kind(mode)}; "
                         "only regular files are read as policies", "not-regular-file")

    # stat before opening: opening a device can have effects of its own
    # (a tape rewinds, a watchdog arms); fstat after: what is read is what was checked.
    try:
        check_regular(os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise refuse("cannot read the file: it is a symbolic link to a file that does not exist") from None
        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)   # callers watching a directory skip these
        raise refuse(f"cannot read the file: {exc.strerror or exc}", "missing" if missing else "unreadable") from None
    try:
        info = os.fstat(fd)
        check_regular(info.st_mode)
        if info.st_size > max_bytes:
            raise refuse(_too_large(f"{info.st_size} bytes", max_bytes), "too-large")
        os.set_blocking(fd, True)
        data = b""
        while len(data) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > max_bytes:   # the file grew while read, or /proc claimed size 0
            raise refuse(_too_large(f"more than {max_bytes} bytes", max_bytes), "too-large")
    except OSError as exc:
        raise refuse(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return data


def _too_large(size: str, max_bytes: int = limits.MAX_POLICY_FILE_BYTES) -> str:
    return f"the file is too large ({size}; the limit is {max_bytes} bytes)"


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def _load_document(ctx: Context, node: YNode, number: int) -> Policy | None:
    if node.kind == "scalar" and node.value is None:
        return None  # an empty document between "---" separators
    if node.kind != "map":
        # not a word of the content: a policy path may name any file (/etc/shadow)
        what = {"seq": "a list"}.get(node.kind, "a single value")
        ctx.error(node.line, "", f"expected a TracingPolicy document (a mapping), the document is {what}",
                  "type")
        return None
    if node.entries and not any(key in node.entries for key in ("apiVersion", "kind", "metadata", "spec")):
        # Another kind of file (/etc/shadow parses as a mapping of its lines):
        # one error, no key quoted.
        ctx.error(node.line, "", "not a TracingPolicy document (it has none of the fields apiVersion, "
                  "kind, metadata, spec)", "not-a-policy")
        return None
    expect_map(ctx, node, "")
    errors_before = len(ctx.errors)
    check_fields(ctx, node, "", ("apiVersion", "kind", "metadata", "spec") + SERVER_SET_TOP)
    ctx.note_server_set(node, "", SERVER_SET_TOP)
    api_version = get_str(ctx, node, "apiVersion", "", required=True)
    if api_version and api_version != API_VERSION:
        ctx.error(node.key_line("apiVersion"), "apiVersion", f'unsupported apiVersion {shown(api_version)} '
                  f'(expected "{API_VERSION}")', "api-version", api_version)
    kind = get_str(ctx, node, "kind", "", required=True)
    if kind == NAMESPACED_KIND:
        ctx.error(node.key_line("kind"), "kind", f"{NAMESPACED_KIND}: namespaced policies are a Kubernetes "
                  f"concept, tetrahost runs on plain hosts (use kind: {KIND})", "kubernetes-only", NAMESPACED_KIND)
    elif kind and kind != KIND:
        ctx.error(node.key_line("kind"), "kind", f'unsupported kind {shown(kind)} (expected "{KIND}")', "kind", kind)
    name = _metadata_name(ctx, node)
    spec = node.get("spec")
    if spec is None:
        ctx.error(node.line, "spec", "required field is missing", "missing", "spec")
        return None
    hooks, mode, options = validate_spec(ctx, spec, "spec")
    if len(ctx.errors) != errors_before:
        return None
    if any(h.kind == "enforcer" for h in hooks):
        # NotifyEnforcer notes and the enforcer meet by the policy's name
        hooks = [replace(h, enforcer=name) for h in hooks]
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
    ctx.note_server_set(metadata, "metadata", SERVER_SET_METADATA)
    for key in ("annotations", "labels"):
        child = metadata.get(key)
        if child is not None and expect_map(ctx, child, join("metadata", key)):
            for entry_key, (line, value) in child.entries.items():
                if value.kind != "scalar" or not isinstance(value.value, str):
                    ctx.error(line, f"metadata.{key}.{entry_key}", f"expected a string, got {value.describe()}", "type")
    name = get_str(ctx, metadata, "name", "metadata", required=True)
    if name:
        problem = name_problem(name)
        if problem:
            ctx.error(metadata.key_line("name"), "metadata.name", problem, "invalid-name")
    return name


def name_problem(name: str) -> str:
    """Why `name` is not a policy name Tetragon accepts ("" when it is)."""
    if len(name) > _MAX_NAME:
        return f"a policy name has at most {_MAX_NAME} characters, this one has {len(name)}"
    if _NAME.fullmatch(name):
        return ""
    hint = ""
    suggestion = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    suggestion = re.sub(r"\.[-.]*|[-.]*\.", ".", suggestion)
    if suggestion and len(suggestion) <= _MAX_NAME and _NAME.fullmatch(suggestion):
        hint = f" (try {shown(suggestion)})"
    return (f"{shown(name)} is not a valid policy name: Tetragon and Kubernetes require a DNS-1123 "
            "subdomain: lower case letters, digits, '-' and '.', every '.'-separated part starting "
            f"and ending with a letter or digit{hint}")
