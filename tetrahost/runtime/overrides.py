"""What `tetra tracingpolicy set-mode / enable / disable` decided, kept across restarts.

An operator who disables a policy, or sets it to monitor while chasing a false
positive, means it until they say otherwise: not until the next `systemctl
restart`, package upgrade or edit of the file.  The decisions live in one
small JSON file beside the policies (POLICY_STATE_FILE in the primary policy
directory: a dotfile, which the directory reconciler never loads), keyed by
policy name, written atomically (temp file, fsync, rename).

The policy manager consults it each time it loads a policy: a mode set here
wins over the file's (as Tetragon's runtime mode wins over the policy's), and
a disabled policy is listed, with state "disabled", but attaches nothing.

A file that cannot be read or parsed is reported (file and what is wrong) and
treated as empty: the policies then load as written, which is what the files
on disk say; nothing stops enforcing because of it.
"""
from __future__ import annotations

import json
import logging

from tetrahost.atomic_write import write_text_atomically

log = logging.getLogger(__name__)

POLICY_STATE_FILE = ".tetrahost-policy-state.json"
MODES = ("enforce", "monitor")
MAX_BYTES = 1 << 20


class PolicyOverrides:
    def __init__(self, path: str | None = None):
        """path: the JSON file (None: decisions last as long as the agent)."""
        self.path = path
        self._by_name: dict[str, dict] = {}
        if path:
            self._by_name = self._read(path)

    @staticmethod
    def _read(path: str) -> dict[str, dict]:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("%s: cannot read the policy state (set-mode/disable decisions): %s; "
                      "policies load as their files say", path, exc)
            return {}
        problem = "larger than 1 MiB" if len(raw) > MAX_BYTES else ""
        data = None
        if not problem:
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                problem = f"not JSON: {exc}"
        if not problem and not isinstance(data, dict):
            problem = "expected a JSON object of policy name -> {mode, enabled}"
        if problem:
            log.error("%s: policy state ignored: %s; policies load as their files say", path, problem)
            return {}
        out = {}
        for name, entry in data.items():
            ok = isinstance(entry, dict) and entry.get("mode", "enforce") in MODES \
                and isinstance(entry.get("enabled", True), bool)
            if not ok:
                log.error("%s: %s: ignored: expected {\"mode\": \"enforce\"|\"monitor\", \"enabled\": true|false}, "
                          "got %.200r", path, name, entry)
                continue
            out[name] = {k: entry[k] for k in ("mode", "enabled") if k in entry}
        return out

    # -- what the manager asks when it loads a policy ---------------------------------
    def mode(self, name: str) -> str | None:
        return self._by_name.get(name, {}).get("mode")

    def enabled(self, name: str) -> bool:
        return self._by_name.get(name, {}).get("enabled", True)

    def describe(self) -> dict:
        return {name: dict(entry) for name, entry in sorted(self._by_name.items())}

    # -- what the control operations change -------------------------------------------
    def set(self, name: str, mode: str | None = None, enabled: bool | None = None) -> None:
        """Record a decision and write the file; OSError (the decision is then not made)."""
        entry = dict(self._by_name.get(name, {}))
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
            entry["mode"] = mode
        if enabled is not None:
            entry["enabled"] = enabled
        self.put(name, entry)

    def entry(self, name: str) -> dict | None:
        """The decisions recorded for `name` (None: none), to put() back."""
        entry = self._by_name.get(name)
        return dict(entry) if entry is not None else None

    def put(self, name: str, entry: dict | None) -> None:
        """Replace the decisions for `name` (None: forget them) and write the file."""
        updated = {k: v for k, v in self._by_name.items() if k != name}
        if entry:
            updated[name] = dict(entry)
        if self.path:
            self._write(updated)
        self._by_name = updated

    def _write(self, data: dict) -> None:
        write_text_atomically(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
