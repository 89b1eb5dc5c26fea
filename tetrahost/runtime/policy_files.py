"""The control operations on policy files: `tetra tracingpolicy add/delete`.

Validate before writing, write atomically (temp file + rename), apply at
once through the directory's reconciler, and delete only files that define
nothing but the named policy.  The reconciler (runtime/reconciler.py) then
sees its own writes as unchanged files.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from tetrahost.atomic_write import write_text_atomically
from tetrahost.policy.load import LoadResult, load_text
from tetrahost.runtime.reconciler import is_policy_name

if TYPE_CHECKING:
    from tetrahost.runtime.reconciler import FileRecord, PolicyDirectory


class PolicyRejected(Exception):
    """A policy the control operations refuse, with every reason as a record:
    {"file", "line" (0: unknown), "field" ("" for the document), "message", "text"
    (the rendered `file:line: field: message`)}, carried whole to the client."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        super().__init__("\n".join(p["text"] for p in problems))

    @staticmethod
    def problem(file: str, message: str, line: int = 0, field: str = "", text: str = "") -> dict:
        return {"file": file, "line": line, "field": field, "message": message,
                "text": text or f"{file}: {message}"}


class PolicyFiles:
    """Adds and deletes the files of one policy directory (the primary one)."""

    def __init__(self, directory: "PolicyDirectory"):
        self.directory = directory

    @property
    def path(self) -> str:
        return self.directory.path

    @property
    def manager(self):
        return self.directory.manager

    def reconcile(self, name: str, checked=None):
        return self.directory.reconcile(name, checked)

    def validate_text(self, filename: str, text: str) -> list[str]:
        """Errors that would stop `text` from loading as `filename` here ([] if none)."""
        return [p["text"] for p in self._check_text(filename, text)[0]]

    def _check_text(self, filename: str, text: str) -> tuple[list[dict], LoadResult | None]:
        """What would stop `text` from loading as `filename` here (PolicyRejected
        problems), and the parse of `text` they come from (None: not parsed)."""
        path = os.path.join(self.path, filename)
        if not is_policy_name(filename):
            why = f"{filename!r} is not a policy file name here (NAME.yaml or NAME.yml, no dotfile)"
            return [PolicyRejected.problem(path, why, text=why)], None
        result = load_text(text, file=path)
        if not result.ok:
            return [PolicyRejected.problem(e.file, e.message, e.line, e.path, e.render())
                    for e in result.errors], result
        problems = []
        for p in result.policies:
            owner = self.manager.policies.get(p.name)
            if owner is not None and owner.file != path:
                why = f'policy "{p.name}" is already loaded from {owner.file}'
                problems.append(PolicyRejected.problem(path, why, field="metadata.name", text=why))
        return problems, result

    def write(self, filename: str, text: str) -> FileRecord:
        """Validate, then write atomically (temp file + rename) and apply at once;
        PolicyRejected when it would not load (nothing written)."""
        problems, parsed = self._check_text(filename, text)
        if problems:
            raise PolicyRejected(problems)
        write_text_atomically(os.path.join(self.path, filename), text,
                              tmp=os.path.join(self.path, f".{filename}.tmp-{os.getpid()}"))   # a dotfile: never loaded
        # Load the parse just checked rather than parsing the file a second time
        # (used only if the file still holds what was written); the inotify echo
        # then finds the same digest and does nothing.
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.reconcile(filename, checked=(digest, parsed))

    def remove_policy(self, name: str) -> str:
        """Delete the drop-in file that defines policy `name`; its path."""
        state = self.manager.policies.get(name)
        if state is None:
            raise KeyError(f'no policy named "{name}" is loaded')
        path = os.fspath(state.file)
        if os.path.dirname(path) != self.path:
            raise ValueError(f'policy "{name}" comes from {path}, not from the policy directory {self.path}; '
                             "it cannot be deleted from here")
        others = [n for n in self.manager.names_from(path) if n != name]
        if others:
            raise ValueError(f"{path} also defines {', '.join(others)}: edit the file instead")
        os.unlink(path)
        self.reconcile(os.path.basename(path))
        return path
