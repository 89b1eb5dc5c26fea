"""The control socket's operations on policies: add, delete, set-mode, enable, disable.

Each takes a parsed request and answers with a reply frame.  A refusal
travels structured: a `code` a client can act on, and for a rejected policy
every problem as a record (file, line, field, message, and its rendered
text), never a joined string to be split back (docs/control-protocol.md).
The work itself is the runtime's (runtime/policy_files.py for the files,
runtime/policy_modes.py for the operator's decisions).
"""
from __future__ import annotations

import os

from tetrahost.control import protocol
from tetrahost.control.protocol import ProtocolError
from tetrahost.control.status import policy_list
from tetrahost.runtime.policy_files import PolicyRejected
from tetrahost.runtime.policy_modes import PolicyModes
from tetrahost.runtime.state import PolicyLoadFailed


def rejected(problems: list[dict]) -> bytes:
    """A refused policy: every problem as a record ("problems") and as its line ("errors")."""
    return protocol.error("policy rejected", code=protocol.POLICY_REJECTED, errors=[p["text"] for p in problems],
                          problems=problems)


class PolicyOperations:
    def __init__(self, policy_files, manager, status, enforcements: dict):
        """policy_files: runtime.policy_files.PolicyFiles of the primary directory
        (None: add/delete refused); manager: the PolicyManager (None: this agent
        manages no policies); status: the StatusBoard the replies list from;
        enforcements: the server's enforced-event counts by policy."""
        self.policy_files = policy_files
        self.modes = PolicyModes(manager) if manager is not None else None
        self.status = status
        self.enforcements = enforcements

    def handle(self, op: str, req: dict) -> bytes:
        if op == "policy_add":
            return self.add(req)
        if op == "policy_delete":
            return self.delete(req)
        if op == "policy_set_mode":
            mode = req.get("mode")
            if mode not in ("enforce", "monitor"):
                raise ProtocolError('policy_set_mode needs a field mode: "enforce" or "monitor"')
            return self._decide(req, op, lambda m, name: m.set_mode(name, mode))
        if op in ("policy_enable", "policy_disable"):
            enabled = op == "policy_enable"
            return self._decide(req, op, lambda m, name: m.set_enabled(name, enabled))
        raise ProtocolError(f"unknown op {op!r}")

    def _listed(self, names) -> list[dict]:
        """The policies named, as policy_list shows them now (a snapshot taken after the change)."""
        return [p for p in policy_list(self.status.retake(), self.enforcements) if p["name"] in names]

    def _files(self):
        if self.policy_files is None:
            raise ProtocolError("this agent has no policy directory configured")
        return self.policy_files

    def add(self, req) -> bytes:
        directory = self._files()
        filename, content = req.get("filename"), req.get("content")
        if not isinstance(filename, str) or not isinstance(content, str):
            raise ProtocolError("policy_add needs string fields filename and content")
        path = os.path.join(directory.path, filename)
        try:
            rec = directory.write(filename, content)
        except PolicyRejected as exc:
            return rejected(exc.problems)
        if rec is None or not rec.ok:      # valid, but the kernel side refused it (compile, verifier, attach)
            texts = rec.errors if rec else ["the file vanished before it was applied"]
            return rejected([PolicyRejected.problem(path, t, text=t) for t in texts])
        return protocol.reply(file=path, policies=self._listed(rec.names))

    def delete(self, req) -> bytes:
        name = req.get("name")
        if not isinstance(name, str):
            raise ProtocolError("policy_delete needs a string field name")
        try:
            path = self._files().remove_policy(name)
        except KeyError as exc:
            return protocol.error(exc.args[0], code=protocol.NO_SUCH_POLICY)
        except ValueError as exc:
            return protocol.error(exc.args[0], code=protocol.NOT_DELETABLE)
        return protocol.reply(file=path, deleted=name)

    def _decide(self, req, op: str, decide) -> bytes:
        """set-mode / enable / disable: decide(PolicyModes, name), then the policy as it now runs."""
        name = req.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"{op} needs a string field name")
        if self.modes is None:
            raise ProtocolError("this agent manages no policies")
        try:
            state = decide(self.modes, name)
        except KeyError as exc:
            return protocol.error(exc.args[0], code=protocol.NO_SUCH_POLICY)
        except ValueError as exc:
            return protocol.error(exc.args[0], code=protocol.NOT_APPLICABLE)
        except PolicyLoadFailed as exc:
            return rejected([PolicyRejected.problem(exc.file, m, text=m) for m in exc.messages])
        except OSError as exc:
            return protocol.error(f"cannot keep the decision in {exc.filename or 'the policy state file'}: "
                                  f"{exc.strerror or exc}; nothing changed", code=protocol.NOT_PERSISTED)
        (listed,) = self._listed({state.policy.name})
        return protocol.reply(policy=listed, persisted=bool(self.modes.manager.overrides.path))
