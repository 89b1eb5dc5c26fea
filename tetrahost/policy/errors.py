"""Problems found in a policy file: errors (the policy is rejected) and warnings.

Every problem points at a place in the YAML (file, 1-based line, field path) so a
user can fix the policy without guessing; `code` and `detail` group problems for
the conformance tally and for tests, independent of the wording of `message`.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        self.path = path
        self.message = message
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
