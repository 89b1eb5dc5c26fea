"""policies.d: a directory of TracingPolicy files, applied live (the reconciler).

The directory is watched with inotify.  Events only mark file NAMES dirty;
after a debounce (DEBOUNCE seconds since the last event, at most MAX_DELAY
since the first) each dirty name is reconciled with what is on disk NOW:
present -> load or replace, absent -> unload.  Looking at the file system
rather than replaying events makes editors' saves come out right whatever
their dance (vim: rename to backup + write new; others: write temp + rename),
and a burst of events costs one reload.

Half-written files: a file is considered when a writer CLOSES it
(IN_CLOSE_WRITE) or it is renamed into the directory (IN_MOVED_TO), never on
IN_MODIFY, so a policy is not read while it is being written.  IN_CREATE
counts only for names that are complete when created: a symlink, a hard
link (a regular file with st_nlink > 1: its content was written elsewhere;
a new file being written has st_nlink 1 and waits for its close) or a
special file (FIFO, device, directory: reported as not a policy).  A file
whose content did not change (same SHA-256) is not reloaded.

Hostile files (see policy/isolated.py): only regular files are read, without
blocking and up to limits.max_policy_file_kb; the parse runs in a worker
process with a deadline and a memory limit.  A file that cannot be read or
parsed is one error naming it; nothing else is affected.

The loop stays responsive: dirty names wait in a queue and work() -- an agent
worker, one slice per loop turn -- reads, parses and loads them one step at a
time (a step is one hook: ~0.13 s for a BPF load and verify), so the ring
buffer, timers and control socket are served between hooks.  At start the
queue is worked off before start() returns: READY=1 (sd_notify, the last
component) still means every file present at start has been processed.

Ignored: names not ending in .yaml/.yml, dotfiles (this includes emacs' .#lock
files and our own temp files), backups ending in ~ and vim's .swp files.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field

from tetrahost.inotify import (IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_MOVE_SELF,
                               IN_MOVED_FROM, IN_MOVED_TO, IN_ONLYDIR, IN_Q_OVERFLOW, Inotify, OneShotTimer,
                               complete_on_create)
from tetrahost.policy.isolated import ParseInChild, PendingParse, UnreadablePolicy, read_policy_file
from tetrahost.policy.load import LoadResult

log = logging.getLogger(__name__)

DEFAULT_DIR = "/etc/tetragon/policies.d"
DEBOUNCE = 0.05          # only closed or renamed-in files are read: this only coalesces bursts
MAX_DELAY = 1.0
WATCH_MASK = (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_DIRTY = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE
SLICE = 0.05             # seconds of loading per loop turn (a single hook load may take longer)
PARSE_POLL = 0.005       # seconds between looks at the parsing worker
MAX_FILE_BYTES = 1024 * 1024
RESOURCE_RETRY_FIRST, RESOURCE_RETRY_MAX = 1.0, 60.0   # a file rejected for want of fds/memory


@dataclass
class FileRecord:
    digest: str
    ok: bool
    names: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duplicate: bool = False           # rejected because another file owns a name: retried on unloads
    retries: int = 0                  # consecutive rejections for want of fds/memory


@dataclass
class _Job:
    """One file on its way in: parsed by the worker, then loaded hook by hook."""
    name: str
    path: str
    digest: str
    text: str
    parse: PendingParse | None = None
    load: object = None               # the manager's ApplyJob once parsed
    had: bool = False                 # the file had loaded policies before

    def cancel(self) -> None:
        if self.load is not None:
            self.load.cancel()
        elif self.parse is not None:
            self.parse.cancel()


def is_policy_name(name: str) -> bool:
    if not name or name.startswith(".") or "/" in name:
        return False
    return name.endswith((".yaml", ".yml"))


class PolicyDirectory:
    """Agent component: keeps the PolicyManager in step with a directory.
    Writing and deleting files for the control socket is PolicyFiles'
    (tetrahost/runtime/policy_files.py), which calls reconcile()."""
    needs_policies = True             # the agent creates its PolicyManager even without --policy files

    def __init__(self, path: str = DEFAULT_DIR, debounce: float = DEBOUNCE, manager=None,
                 max_file_bytes: int = MAX_FILE_BYTES, primary: bool = True):
        """primary: the directory `tetra tracingpolicy add/delete` write to, created
        when missing; another one (Tetragon's tetragon.tp.d) is only read, and
        watched when it exists at start.  Both feed one PolicyManager, which
        refuses a policy name defined in two files (the second file names the first)."""
        self.primary = primary
        self.path = os.path.realpath(path)
        self.debounce = debounce
        self.manager = manager
        self.max_file_bytes = max_file_bytes
        self.parser = ParseInChild()
        self._loop = None                          # the agent's EventLoop once started with services
        self._queue: dict[str, None] = {}          # names to reconcile, in order
        self._job: _Job | None = None
        self._retry_at: dict[str, float] = {}      # name -> when to reconcile again (fds/memory)
        self.files: dict[str, FileRecord] = {}
        self.inotify: Inotify | None = None
        self.timer: OneShotTimer | None = None
        self._pending: set[str] = set()
        self._rescan = False
        self._first_pending = 0.0
        self._watch_lost = False

    # -- component ---------------------------------------------------------------------
    def start(self, services=None) -> None:
        """services: the agent's (runtime.services); None: no loop (tests drive it)."""
        if services is not None:
            self.manager = services.policies
            if self.primary:              # its files' errors are in `tetra status` and policy_list
                services.status.add_section("policy_dir", self.describe)
            if services.config is not None:
                self.max_file_bytes = services.config.limits.max_policy_file_kb * 1024
        if self.primary:
            os.makedirs(self.path, mode=0o755, exist_ok=True)
        self.inotify = Inotify()
        self.timer = OneShotTimer()
        self.inotify.add_watch(self.path, WATCH_MASK)   # before the scan: no change slips between
        self.scan()
        self.run_queue(services.drain_events if services is not None else None)
        if services is not None:
            loop = self._loop = services.loop
            loop.add_reader(self.inotify.fd, self.on_inotify)
            loop.add_reader(self.timer.fd, self.on_timer)
            loop.add_timer(1.0, self.housekeeping)
            loop.add_worker(self.work)
        log.info("watching policy directory %s: %d file(s), %d policies", self.path, len(self.files),
                 sum(len(r.names) for r in self.files.values()))

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self.parser.close()
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
            elif is_policy_name(ev.name) and (ev.mask & _DIRTY or (
                    ev.mask & IN_CREATE and complete_on_create(os.path.join(self.path, ev.name)))):
                self._mark(ev.name)
        if self._rescan and not self._pending:
            self._mark(None)

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
        """Queue every pending change (the debounce timer's work); the agent's
        loop works the queue off (without an agent: at once)."""
        pending, self._pending = sorted(self._pending), set()
        rescan, self._rescan = self._rescan, False
        self._first_pending = 0.0
        if rescan:
            self.scan()
        self._enqueue(pending)
        if self._loop is None:
            self.run_queue()

    def _enqueue(self, names) -> None:
        for name in names:
            self._queue[name] = None
        if self._loop is not None:
            self._loop.wake_workers()

    def run_queue(self, between=None) -> None:
        """Work the queue off now (start-up, and tests without an agent loop);
        between(): called after each slice (the agent drains its ring buffer)."""
        while self._queue or self._job is not None:
            delay = self.work()
            if between is not None:
                between()
            if delay:
                time.sleep(min(delay, PARSE_POLL))

    def work(self) -> float | None:
        """One slice (at least one step, then up to SLICE seconds) of the queue's
        work; 0 if more is ready, else seconds until it may be, None when idle."""
        deadline = time.monotonic() + SLICE
        while True:
            if self._job is None:
                name = self._next_name()
                if name is None:
                    if not self._retry_at:
                        return None
                    return max(0.0, min(self._retry_at.values()) - time.monotonic())
                self._job = self._guard(name, self._begin, name)
            if self._job is not None:
                wait = self._guard(self._job.name, self._advance, self._job)
                if wait:
                    return wait
            if time.monotonic() >= deadline:
                return 0

    def _guard(self, name: str, step, arg):
        """Run one step for `name`; a failure nobody foresaw costs that file an
        error, never the queue (at start: never the agent's start-up)."""
        try:
            return step(arg)
        except Exception as exc:
            log.debug("policy file %s", name, exc_info=True)
            job, self._job = self._job, None
            if job is not None:
                try:
                    job.cancel()
                except Exception:
                    log.debug("cancelling the load of %s", name, exc_info=True)
            path = os.path.join(self.path, name)
            self._reject(path, f"failed: {type(exc).__name__}", [f"{path}: cannot be loaded: "
                                                                 f"{type(exc).__name__}: {exc}"])
            return None

    def _next_name(self) -> str | None:
        now = time.monotonic()
        for name, due in list(self._retry_at.items()):
            if due <= now:
                del self._retry_at[name]
                self._queue[name] = None
        if not self._queue:
            return None
        name = next(iter(self._queue))
        del self._queue[name]
        return name

    def housekeeping(self) -> None:
        self.manager.purge_retired()
        self.check_watch()
        if self._retry_at and self._loop is not None:
            self._loop.wake_workers()

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
        gone = [os.path.basename(p) for p in set(self.files) - {os.path.join(self.path, n) for n in names}]
        for name in sorted(gone) + names:
            self._queue[name] = None

    def reconcile(self, name: str, checked: tuple[str, LoadResult] | None = None) -> FileRecord | None:
        """Make the loaded state of `name` match the file on disk now (for the
        control socket: synchronous); the file's record (None: absent).
        checked: (SHA-256, parse) of content the caller has parsed already (write()),
        loaded as is when the file on disk still holds exactly that content."""
        path = os.path.join(self.path, name)
        if self._job is not None and self._job.path == path:
            self._job.cancel()        # superseded: what is on disk now wins
            self._job = None
        job = self._begin(name, checked)
        while job is not None and (wait := self._advance(job)) is not None:
            if wait:
                time.sleep(min(wait, PARSE_POLL))
        return self.files.get(path)

    def _begin(self, name: str, checked: tuple[str, LoadResult] | None = None) -> _Job | None:
        """Look at `name` on disk: removals, unchanged and unreadable files are
        dealt with here and now (None); a file to load becomes a job."""
        path = os.path.join(self.path, name)
        try:
            data = read_policy_file(path, self.max_file_bytes)
        except UnreadablePolicy as exc:
            self._reject(path, f"unreadable: {exc}", [f"{path}: {exc}"])
            return None
        if data is None:
            if path in self.files:
                self.files.pop(path)
                removed = self.manager.unload_file(path)
                log.info("policy file %s removed: unloaded %s", path, ", ".join(removed) or "nothing")
                self._retry_duplicates()
            return None
        digest = hashlib.sha256(data).hexdigest()
        rec = self.files.get(path)
        if rec is not None and rec.digest == digest and not (rec.retries or rec.duplicate):
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._reject(path, digest, [f"{path}: not UTF-8 text: {exc}"])
            return None
        job = _Job(name, path, digest, text, had=bool(self.manager.names_from(path)))
        if checked is not None and checked[0] == digest:
            job.load = self.manager.begin_apply(path, text, parsed=checked[1])
            return job
        try:
            job.parse = self.parser.start(path, text)
        except OSError as exc:
            self._reject(path, digest, [f"{path}: cannot start the policy parser: {exc}"], retryable=True)
            return None
        return job

    def _advance(self, job: _Job) -> float | None:
        """One step of a job: None when it is finished, 0 after a step, or the
        seconds to wait for the parsing worker."""
        if job.load is None:
            result = job.parse.poll()
            if result is None:
                return PARSE_POLL
            job.load = self.manager.begin_apply(job.path, job.text, parsed=result)
            return 0
        if not job.load.step():
            return job.load.pause
        if job is self._job:
            self._job = None
        err = job.load.error
        if err is not None:
            self._reject(job.path, job.digest, err.messages, err.name_conflict, err.retryable, counted=True)
            return None
        states = job.load.states
        self.files[job.path] = FileRecord(job.digest, True, [s.policy.name for s in states])
        log.info("policy file %s %s: %s", job.path, "reloaded" if job.had else "loaded",
                 ", ".join(f"{s.policy.name} ({s.state})" for s in states))
        return None

    def _reject(self, path: str, digest: str, errors: list[str], duplicate: bool = False,
                retryable: bool = False, counted: bool = False) -> FileRecord:
        """Record and log a file that did not load; the previous version (if any) keeps running."""
        if not counted:       # the manager counts the loads it was asked to do
            self.manager.reloads.failed += 1
            self.manager.errors[path] = errors
        prev = self.files.get(path)
        rec = FileRecord(digest, False, self.manager.names_from(path), errors, duplicate=duplicate,
                         retries=(prev.retries + 1 if prev is not None else 1) if retryable else 0)
        self.files[path] = rec
        keep = f"; still running the previous version of {', '.join(rec.names)}" if rec.names else ""
        again = ""
        if retryable:
            delay = min(RESOURCE_RETRY_MAX, RESOURCE_RETRY_FIRST * 2 ** (rec.retries - 1))
            self._retry_at[os.path.basename(path)] = time.monotonic() + delay
            again = f"; out of resources, trying again in {delay:.0f} s"
        log.error("policy file %s rejected%s%s:\n  %s", path, keep, again, "\n  ".join(errors))
        return rec

    def _retry_duplicates(self) -> None:
        dups = [os.path.basename(p) for p, rec in sorted(self.files.items()) if rec.duplicate]
        if dups:
            self._enqueue(dups)

    def describe(self) -> dict:
        return {"path": self.path, "watching": not self._watch_lost,
                "queued": len(self._queue) + (self._job is not None),
                "files": [{"file": p, "ok": r.ok, "policies": r.names, "errors": r.errors}
                          for p, r in sorted(self.files.items())]}
