"""Problems found in a policy file: errors (the policy is rejected) and warnings.

Every problem points at a place in the YAML (file, 1-based line, field path) so a
user can fix the policy without guessing; `code` and `detail` group problems for
the conformance tally and for tests, independent of the wording of `message`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Error messages end up in logs, `tetra status` and journald: they may quote
# the offending token of a policy file, never more of it (a policy path can
# point at any file, /etc/shadow included).
MAX_QUOTED = 64      # characters of a value quoted in a message
MAX_MESSAGE = 400    # characters of a whole message (field path and text each)


def shown(value: object, limit: int = MAX_QUOTED) -> str:
    """`value` quoted for a message, cut to `limit` characters with an ellipsis."""
    return f'"{clip(str(value), limit)}"'


def clip(text: str, limit: int = MAX_QUOTED) -> str:
    """`text` cut to `limit` characters, "…" marking the cut; control characters escaped."""
    if len(text) > limit:
        text = text[:limit] + "…"
    if any(ch < " " or ch == "\x7f" for ch in text):
        text = "".join(ch if " " <= ch != "\x7f" else f"\\x{ord(ch):02x}" for ch in text)
    return text


@dataclass(frozen=True)
class Location:
    """Where something came from in a policy file."""

    file: str
    line: int  # 1-based; 0 when unknown (e.g. the file could not be read)
    path: str  # field path such as "spec.kprobes[0].selectors[1]"; "" for the document


class PolicyError(Exception):
    """One reason a policy file is rejected, rendered `file:line: path: message`."""

    def __init__(self, file: str, line: int, path: str, message: str,
                 code: str = "invalid", detail: str = ""):
        self.file = file
        self.line = line
        self.path = clip(path, MAX_MESSAGE)
        self.message = clip(message, MAX_MESSAGE)
        self.code = code
        self.detail = detail
        super().__init__(self.render())

    @property
    def location(self) -> Location:
        return Location(self.file, self.line, self.path)

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"PolicyError({self.render()!r}, code={self.code!r})"


@dataclass(frozen=True)
class PolicyWarning:
    """Something accepted but worth telling (ignored parameter, inferred default)."""

    file: str
    line: int
    path: str
    message: str
    code: str = "warning"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", clip(self.path, MAX_MESSAGE))
        object.__setattr__(self, "message", clip(self.message, MAX_MESSAGE))

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.path:
            return f"{where}: {self.path}: warning: {self.message}"
        return f"{where}: warning: {self.message}"


class PolicyLoadError(Exception):
    """All the errors of one file; raised by load_file when any was found."""

    def __init__(self, file: str, errors: list[PolicyError],
                 warnings: list[PolicyWarning] | None = None):
        self.file = file
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        count = len(self.errors)
        lines = "\n".join(e.render() for e in self.errors)
        super().__init__(f"{file}: {count} error{'s' if count != 1 else ''}\n{lines}")
