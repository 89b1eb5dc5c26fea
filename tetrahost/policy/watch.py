"""policies.d: a directory of TracingPolicy files, applied live.

The directory is watched with inotify.  Events only mark file NAMES dirty;
after a debounce (DEBOUNCE seconds since the last event, at most MAX_DELAY
since the first) each dirty name is reconciled with what is on disk NOW:
present -> load or replace, absent -> unload.  Looking at the file system
rather than replaying events makes editors' saves come out right whatever
their dance (vim: rename to backup + write new; others: write temp + rename),
and a burst of events costs one reload.

Half-written files: a file is considered when a writer CLOSES it
(IN_CLOSE_WRITE) or it is renamed/linked into the directory (IN_MOVED_TO),
never on IN_CREATE/IN_MODIFY, so a policy is not read while it is being
written.  A file whose content did not change (same SHA-256) is not reloaded.

Ignored: names not ending in .yaml/.yml, dotfiles (this includes emacs' .#lock
files and our own temp files), backups ending in ~ and vim's .swp files.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field

from tetrahost.inotify import (IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_MOVE_SELF,
                               IN_MOVED_FROM, IN_MOVED_TO, IN_ONLYDIR, IN_Q_OVERFLOW, Inotify, OneShotTimer)
from tetrahost.policy.load import LoadResult, load_text

log = logging.getLogger(__name__)

DEFAULT_DIR = "/etc/tetragon/policies.d"
DEBOUNCE = 0.05          # only closed or renamed-in files are read: this only coalesces bursts
MAX_DELAY = 1.0
WATCH_MASK = (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_DIRTY = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE


def is_policy_name(name: str) -> bool:
    if not name or name.startswith(".") or "/" in name:
        return False
    return name.endswith((".yaml", ".yml"))


@dataclass
class FileRecord:
    digest: str
    ok: bool
    names: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duplicate: bool = False           # rejected because another file owns a name: retried on unloads


class PolicyDirectory:
    """Agent component: keeps the PolicyManager in step with a directory."""
    needs_policies = True             # the agent creates its PolicyManager even without --policy files

    def __init__(self, path: str = DEFAULT_DIR, debounce: float = DEBOUNCE, manager=None):
        self.path = os.path.realpath(path)
        self.debounce = debounce
        self.manager = manager
        self.files: dict[str, FileRecord] = {}
        self.inotify: Inotify | None = None
        self.timer: OneShotTimer | None = None
        self._pending: set[str] = set()
        self._rescan = False
        self._first_pending = 0.0
        self._watch_lost = False

    # -- component ---------------------------------------------------------------------
    def start(self, agent=None) -> None:
        if agent is not None:
            self.manager = agent.policies
            agent.policy_dir = self          # the control server finds us here
        os.makedirs(self.path, mode=0o755, exist_ok=True)
        self.inotify = Inotify()
        self.timer = OneShotTimer()
        self.inotify.add_watch(self.path, WATCH_MASK)   # before the scan: no change slips between
        if agent is not None:
            agent.add_reader(self.inotify.fd, self.on_inotify)
            agent.add_reader(self.timer.fd, self.on_timer)
            agent.add_timer(1.0, self.housekeeping)
        self.scan()
        log.info("watching policy directory %s: %d file(s), %d policies", self.path, len(self.files),
                 sum(len(r.names) for r in self.files.values()))

    def stop(self) -> None:
        for res in (self.inotify, self.timer):
            if res is not None:
                res.close()

    # -- events ------------------------------------------------------------------------
    def on_inotify(self) -> None:
        for ev in self.inotify.read():
            if ev.mask & IN_Q_OVERFLOW:
                self._rescan = True
            elif ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                if not self._watch_lost:
                    log.error("policy directory %s was removed or moved: loaded policies keep running; "
                              "changes are not seen until it is back", self.path)
                self._watch_lost = True
            elif ev.mask & _DIRTY or (ev.mask & IN_CREATE and self._is_symlink(ev.name)):
                if is_policy_name(ev.name):
                    self._mark(ev.name)
        if self._rescan and not self._pending:
            self._mark(None)

    def _is_symlink(self, name: str) -> bool:
        # a symlink never gets IN_CLOSE_WRITE: its creation is its completion
        return os.path.islink(os.path.join(self.path, name))

    def _mark(self, name: str | None) -> None:
        now = time.monotonic()
        if not self._first_pending:
            self._first_pending = now
        if name is not None:
            self._pending.add(name)
        delay = min(self.debounce, self._first_pending + MAX_DELAY - now)
        self.timer.arm(max(delay, 0.001))

    def on_timer(self) -> None:
        if not self.timer.consume():
            return
        self.flush()

    def flush(self) -> None:
        """Apply every pending change now (the debounce timer's work)."""
        pending, self._pending = sorted(self._pending), set()
        rescan, self._rescan = self._rescan, False
        self._first_pending = 0.0
        if rescan:
            self.scan()
        for name in pending:
            self.reconcile(name)

    def housekeeping(self) -> None:
        self.manager.purge_retired()
        self.check_watch()

    def check_watch(self) -> None:
        if self._watch_lost and os.path.isdir(self.path):
            self.inotify.add_watch(self.path, WATCH_MASK)
            self._watch_lost = False
            log.info("policy directory %s is back; rescanning", self.path)
            self.scan()

    # -- reconciliation --------------------------------------------------------------------
    def scan(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.path) if is_policy_name(n))
        except OSError as exc:
            log.error("cannot list policy directory %s: %s", self.path, exc)
            return
        for gone in set(self.files) - {os.path.join(self.path, n) for n in names}:
            self.reconcile(os.path.basename(gone))
        for name in names:
            self.reconcile(name)

    def reconcile(self, name: str, checked: tuple[str, LoadResult] | None = None) -> FileRecord | None:
        """Make the loaded state of `name` match the file on disk; the file's record (None: absent).
        checked: (SHA-256, parse) of content the caller has parsed already (write()),
        loaded as is when the file on disk still holds exactly that content."""
        path = os.path.join(self.path, name)
        data = _read_regular(path)
        if data is None:
            if path in self.files:
                self.files.pop(path)
                removed = self.manager.unload_file(path)
                log.info("policy file %s removed: unloaded %s", path, ", ".join(removed) or "nothing")
                self._retry_duplicates()
            return None
        digest = hashlib.sha256(data).hexdigest()
        rec = self.files.get(path)
        if rec is not None and rec.digest == digest:
            return rec
        parsed = checked[1] if checked is not None and checked[0] == digest else None
        return self._apply(path, data, digest, parsed)

    def _apply(self, path: str, data: bytes, digest: str, parsed: LoadResult | None = None) -> FileRecord:
        from tetrahost.sensors.policies import PolicyLoadFailed
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            rec = FileRecord(digest, False, self.manager.names_from(path), [f"{path}: not UTF-8 text: {exc}"])
            self.manager.reloads.failed += 1
            self.manager.errors[path] = rec.errors
        else:
            had = bool(self.manager.names_from(path))
            try:
                states = self.manager.apply_file(path, text, parsed=parsed)
            except PolicyLoadFailed as exc:
                rec = FileRecord(digest, False, self.manager.names_from(path), exc.messages,
                                 duplicate=exc.name_conflict)
            else:
                rec = FileRecord(digest, True, [s.policy.name for s in states])
                log.info("policy file %s %s: %s", path, "reloaded" if had else "loaded",
                         ", ".join(f"{s.policy.name} ({s.state})" for s in states))
        if not rec.ok:
            keep = f"; still running the previous version of {', '.join(rec.names)}" if rec.names else ""
            log.error("policy file %s rejected%s:\n  %s", path, keep, "\n  ".join(rec.errors))
        self.files[path] = rec
        return rec

    def _retry_duplicates(self) -> None:
        for path, rec in sorted(self.files.items()):
            if rec.duplicate:
                data = _read_regular(path)
                if data is not None:
                    self._apply(path, data, hashlib.sha256(data).hexdigest())

    # -- used by the control socket (tetra tracingpolicy add/delete) --------------------------
    def validate_text(self, filename: str, text: str) -> list[str]:
        """Errors that would stop `text` from loading as `filename` here ([] if none)."""
        return self._check_text(filename, text)[0]

    def _check_text(self, filename: str, text: str) -> tuple[list[str], LoadResult | None]:
        """validate_text's errors, and the parse of `text` they come from (None: not parsed)."""
        if not is_policy_name(filename):
            return [f"{filename!r} is not a policy file name here (NAME.yaml or NAME.yml, no dotfile)"], None
        path = os.path.join(self.path, filename)
        result = load_text(text, file=path)
        if not result.ok:
            return [e.render() for e in result.errors], result
        errors = []
        for p in result.policies:
            owner = self.manager.policies.get(p.name)
            if owner is not None and owner.file != path:
                errors.append(f'policy "{p.name}" is already loaded from {owner.file}')
        return errors, result

    def write(self, filename: str, text: str) -> FileRecord:
        """Validate, then write atomically (temp file + rename) and apply at once."""
        errors, parsed = self._check_text(filename, text)
        if errors:
            raise ValueError("\n".join(errors))
        tmp = os.path.join(self.path, f".{filename}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.path, filename))
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
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

    def describe(self) -> dict:
        return {"path": self.path, "watching": not self._watch_lost,
                "files": [{"file": p, "ok": r.ok, "policies": r.names, "errors": r.errors}
                          for p, r in sorted(self.files.items())]}


def _read_regular(path: str) -> bytes | None:
    """The bytes of a regular file (following symlinks), None if absent or not a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.error("cannot open %s: %s", path, exc)
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
