"""Redaction of secrets before any exporter sees an event.

Tetragon's `redactionFilters`: a list of filters, each
  {"redact": [REGEX, ...], "binary_regex": [REGEX, ...]}
where every capture group of a `redact` match is replaced with "*****" in the
process arguments, for processes whose binary matches one of `binary_regex`
(all processes when it is empty).  tetrahost applies the same filters to the
string and char_buf arguments of policy hooks (string_arg, bytes_arg and
truncated_bytes_arg, before base64), which Tetragon does not.

Redaction happens where the JSON line is made (tetrahost.export.tetragon_json
and hook_json), so the file, stdout, journald (its MESSAGE and TETRAGON_JSON
are made from the line), Elasticsearch and `tetra getevents` streams all get
the redacted text; EventMeta carries no arguments.

DEFAULT_FILTERS are shipped but off unless `export.redact_default_secrets`
is true (docs/configuration.md).  Patterns are Python regular expressions
(RE2's syntax is a subset for what such filters use).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

MASK = "*****"

# Shipped patterns, each catching the secret in its capture group.
DEFAULT_FILTERS = (
    # --password=S, --passwd S, --secret=S, --token S, --api-key=S, --client-secret=S ...
    {"redact": [r"(?i)--?(?:password|passwd|pass|secret|client-secret|token|access-token|api-?key)"
                r"(?:=|\s+)(\"[^\"]*\"|\S+)"]},
    # mysql/mariadb tools: -p<secret> (the password glued to -p; "-p" alone prompts)
    {"redact": [r"(?:^|\s)-p([^\s\"]\S*)"],
     "binary_regex": [r"(?:^|/)(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mariadb[\w-]*)$"]},
    # HTTP bearer tokens: "Authorization: Bearer S"
    {"redact": [r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]+)"]},
    # AWS secret access keys given by name: aws_secret_access_key=S, AWS_SECRET_ACCESS_KEY S, "SecretAccessKey": "S"
    {"redact": [r"(?i)(?:aws_?secret_?access_?key|secret_?access_?key)[\"']?\s*[=:]?\s*[\"']?([A-Za-z0-9/+=]{40})"]},
)


class RedactionError(ValueError):
    pass


@dataclass(frozen=True)
class _Filter:
    redact: tuple[re.Pattern, ...]
    redact_bytes: tuple[re.Pattern, ...]
    binaries: tuple[re.Pattern, ...]


def _compile(pattern, where: str, as_bytes: bool = False) -> re.Pattern:
    if not isinstance(pattern, str):
        raise RedactionError(f"{where}: expected a regular expression string, got {pattern!r}")
    try:
        return re.compile(pattern.encode() if as_bytes else pattern)
    except re.error as exc:
        raise RedactionError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None


def parse_filters(value, where: str = "export.redaction_filters") -> list[dict]:
    """The configured filters as a list of dicts: a list, or Tetragon's
    JSON-lines string (one filter object per line)."""
    if isinstance(value, str):
        out = []
        for n, line in enumerate(value.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as exc:
                    raise RedactionError(f"{where}: line {n}: not JSON: {exc}") from None
        value = out
    if not isinstance(value, list):
        raise RedactionError(f"{where}: expected a list of filters")
    for i, f in enumerate(value):
        if not isinstance(f, dict):
            raise RedactionError(f"{where}[{i}]: expected an object with redact / binary_regex")
        unknown = set(f) - {"redact", "binary_regex", "match"}
        if unknown:
            raise RedactionError(f"{where}[{i}]: unknown key(s) {', '.join(sorted(unknown))} "
                                 "(known: redact, binary_regex)")
        if "match" in f:
            raise RedactionError(f"{where}[{i}].match: deprecated in Tetragon and not supported; use binary_regex")
        for key in ("redact", "binary_regex"):
            if not isinstance(f.get(key, []), list):
                raise RedactionError(f"{where}[{i}].{key}: expected a list of regular expressions")
        if not f.get("redact"):
            raise RedactionError(f"{where}[{i}].redact: at least one regular expression is needed")
    return value


class Redactor:
    """Applies redaction filters to argument text (str) and buffers (bytes)."""

    def __init__(self, filters=(), where: str = "export.redaction_filters"):
        compiled = []
        for i, f in enumerate(parse_filters(list(filters), where)):
            here = f"{where}[{i}]"
            compiled.append(_Filter(
                tuple(_compile(p, f"{here}.redact[{j}]") for j, p in enumerate(f["redact"])),
                tuple(_compile(p, f"{here}.redact[{j}]", True) for j, p in enumerate(f["redact"])),
                tuple(_compile(p, f"{here}.binary_regex[{j}]") for j, p in enumerate(f.get("binary_regex", [])))))
        self.filters = tuple(compiled)

    @classmethod
    def from_config(cls, filters, use_defaults: bool) -> "Redactor | None":
        """None when nothing is to be redacted (the renderers then skip the work)."""
        all_filters = [*(DEFAULT_FILTERS if use_defaults else ()), *parse_filters(filters or [])]
        return cls(all_filters) if all_filters else None

    def _applicable(self, binary: str):
        return [f for f in self.filters if not f.binaries or any(b.search(binary) for b in f.binaries)]

    def text(self, binary: str, value: str) -> str:
        for f in self._applicable(binary):
            for pattern in f.redact:
                value = _mask(pattern, value, MASK)
        return value

    def data(self, binary: str, value: bytes) -> bytes:
        for f in self._applicable(binary):
            for pattern in f.redact_bytes:
                value = _mask(pattern, value, MASK.encode())
        return value


def _mask(pattern: re.Pattern, value, mask):
    """value with the text of every capture group of every match replaced by mask."""
    if not pattern.groups:
        return value
    out, last = [], 0
    for m in pattern.finditer(value):
        for g in range(1, pattern.groups + 1):
            start, end = m.span(g)
            if start < 0 or start < last:
                continue
            out.append(value[last:start])
            out.append(mask)
            last = end
    if not out:
        return value
    out.append(value[last:])
    return value[:0].join(out)
