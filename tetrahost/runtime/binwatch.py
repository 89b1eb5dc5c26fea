"""uprobe and USDT hooks follow their binary when it is replaced.

A uprobe is registered on an inode, not on a path.  A package upgrade
writes the new /usr/bin/foo under a temporary name and renames it over the
old one: the probe stays on the old, now deleted inode, and the program that
runs from then on is not watched.  This agent component watches the parent
directory of every uprobe/USDT hook's path with inotify (IN_MOVED_TO,
IN_CREATE, IN_CLOSE_WRITE, IN_ATTRIB of that name) and, when the path names
another file than the one the hook was attached to ((st_dev, st_ino,
st_mtime_ns) differ), attaches the hook's programs to the new file before it
detaches the old links (HookSensor.retarget: the loaded object is reused,
USDT notes are read again).

A new file that lacks the symbol or point puts the hook in an error state
(not active, the reason in `tetra status`/`tracingpolicy list` and a log
line naming the file and symbol); the policy's other hooks keep running.
A hook in that state, or one that failed at load because its binary was
missing, is attached afresh when the path changes again.

Events only mark paths dirty; after DEBOUNCE seconds the dirty paths are
compared with the files on disk, so the loop never waits.  Every CHECK_EVERY
seconds the set of watched directories is brought in step with the loaded
hooks (policies come and go) and every target is compared again, which
also covers a symlink whose target is replaced and a directory that was
missing when the hook loaded.
"""
from __future__ import annotations

import logging
import os
import time

from tetrahost.bpf import BpfError
from tetrahost.inotify import (IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_IGNORED, IN_MOVED_TO, IN_ONLYDIR,
                               IN_Q_OVERFLOW, Inotify, OneShotTimer, complete_on_create)
from tetrahost.sensors.generic import file_identity

log = logging.getLogger(__name__)

DEBOUNCE = 0.05
CHECK_EVERY = 2.0
WATCH_MASK = IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE | IN_ATTRIB | IN_ONLYDIR
BINARY_KINDS = ("uprobe", "usdt")


def watched_names(path: str) -> set[tuple[str, str]]:
    """(directory, name) pairs whose change may change what `path` names: the
    path as written and, if it goes through symlinks, the file it resolves to."""
    pairs = {(os.path.dirname(path) or "/", os.path.basename(path))}
    real = os.path.realpath(path)
    pairs.add((os.path.dirname(real) or "/", os.path.basename(real)))
    return pairs


class BinaryWatch:
    """Agent component: re-attaches uprobe/USDT hooks whose binary was replaced."""

    def __init__(self, manager=None):
        self.manager = manager
        self.inotify: Inotify | None = None
        self.timer: OneShotTimer | None = None
        self._wds: dict[str, int] = {}            # directory -> watch descriptor
        self._dirs: dict[int, str] = {}           # watch descriptor -> directory
        self._names: dict[tuple[str, str], set[str]] = {}   # (dir, name) -> hook paths it affects
        self._dirty: set[str] = set()
        self._seen: dict[str, tuple | None] = {}  # path -> identity at the last look (hooks in error)
        self.reattached = 0

    def start(self, services=None) -> None:
        """services: the agent's (runtime.services); None: no loop (tests drive it)."""
        if services is not None:
            self.manager = services.policies
        self.inotify = Inotify()
        self.timer = OneShotTimer()
        self.sync()
        if services is not None:
            services.loop.add_reader(self.inotify.fd, self.on_inotify)
            services.loop.add_reader(self.timer.fd, self.on_timer)
            services.loop.add_timer(CHECK_EVERY, self.sync)

    def stop(self) -> None:
        for res in (self.inotify, self.timer):
            if res is not None:
                res.close()

    # -- which files ----------------------------------------------------------------
    def _hooks(self):
        """Live (not retired) uprobe/USDT hook states of loaded policies."""
        if self.manager is None:
            return
        for state in list(self.manager.policies.values()):
            for hs in state.hooks:
                if hs.hook.kind in BINARY_KINDS and hs.retired_at is None:
                    yield hs

    def sync(self) -> None:
        """Watch the directories of today's hooks (and only those), then check every target."""
        names: dict[tuple[str, str], set[str]] = {}
        paths = set()
        for hs in self._hooks():
            paths.add(hs.hook.path)
            for pair in watched_names(hs.hook.path):
                names.setdefault(pair, set()).add(hs.hook.path)
        self._names = names
        wanted = {d for d, _ in names}
        for d in set(self._wds) - wanted:
            self.inotify.rm_watch(self._wds.pop(d))
        for d in wanted - set(self._wds):
            try:
                wd = self.inotify.add_watch(d, WATCH_MASK)
            except OSError as exc:      # missing directory: looked at again next time
                log.debug("binary watch: cannot watch %s: %s", d, exc)
                continue
            self._wds[d] = wd
            self._dirs[wd] = d
        self._seen = {p: v for p, v in self._seen.items() if p in paths}
        self.check(paths)

    # -- events ---------------------------------------------------------------------
    def on_inotify(self) -> None:
        for ev in self.inotify.read():
            if ev.mask & IN_Q_OVERFLOW:
                self._dirty.update(p for ps in self._names.values() for p in ps)
                continue
            if ev.mask & IN_IGNORED:      # the directory went away
                d = self._dirs.pop(ev.wd, None)
                if d is not None and self._wds.get(d) == ev.wd:
                    del self._wds[d]
                continue
            d = self._dirs.get(ev.wd)
            paths = self._names.get((d, ev.name)) if d is not None else None
            if not paths:
                continue
            if ev.mask & IN_CREATE and not complete_on_create(os.path.join(d, ev.name)):
                continue                 # a new file being written: its close will tell
            self._dirty.update(paths)
        if self._dirty:
            self.timer.arm(DEBOUNCE)

    def on_timer(self) -> None:
        if self.timer.consume():
            dirty, self._dirty = self._dirty, set()
            self.check(dirty)

    # -- re-attach ------------------------------------------------------------------
    def check(self, paths) -> None:
        """Compare each hook on one of `paths` with the file its path names now."""
        now = {p: file_identity(p) for p in paths}
        for hs in list(self._hooks()):
            path = hs.hook.path
            if path not in now:
                continue
            if hs.sensor is not None:
                if hs.sensor.target_id is not None and now[path] is not None and now[path] != hs.sensor.target_id:
                    self._retarget(hs, now[path])
            elif hs.retry_at is None and now[path] is not None \
                    and self._seen.get(path, now[path]) != now[path]:
                self._attach_again(hs)
        self._seen.update(now)

    def _retarget(self, hs, now: tuple) -> None:
        """New links on the new file, then the old ones out (unpinned first)."""
        manager, sensor = self.manager, hs.sensor
        was = sensor.target_id
        what = f"{hs.hook.path}" + (f" ({hs.hook.symbol})" if hs.hook.symbol else
                                    f" (USDT {hs.hook.provider}:{hs.hook.usdt_name})" if hs.hook.kind == "usdt"
                                    else f" (offset {hs.hook.offset:#x})")
        how = "replaced" if was[:2] != now[:2] else "rewritten in place"
        try:
            old = sensor.retarget()
        except BpfError as exc:
            reason = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            self._fail(hs, f"{what} was {how} and the new file cannot take the hook: {reason}")
            return
        if hs.pinned:
            manager.pins.remove_hook(hs.hook_id)
        for link in old:
            link.destroy()
        if manager.pins is not None:
            from tetrahost.runtime import adoption
            adoption.pin_hook(manager, hs)
            manager._write_manifest()
        hs.reattached += 1
        hs.binary_changed_at = time.time()
        self.reattached += 1
        log.info("policy %s: %s: %s was %s (inode %d -> %d): re-attached to the new file", hs.policy.name,
                 hs.hook.describe(), what, how, was[1], sensor.target_id[1] if sensor.target_id else now[1])

    def _fail(self, hs, message: str) -> None:
        """The hook cannot follow its binary: it stops (its links watch a file
        that is no longer there) and says why; nothing else is touched."""
        manager = self.manager
        if hs.pinned:
            manager.pins.remove_hook(hs.hook_id)
            hs.pinned = False
        hs.sensor.stop()
        hs.sensor = None
        manager._release_proc_state(hs)
        hs.error = message
        hs.binary_changed_at = time.time()
        log.error("policy %s (%s): %s NOT ACTIVE: %s", hs.policy.name, hs.policy.file, hs.hook.describe(), message)
        if manager.pins is not None:
            manager._write_manifest()

    def _attach_again(self, hs) -> None:
        """A hook in error (binary missing, or without the symbol) whose path changed: a fresh attach."""
        self.manager._attach(hs)
        if hs.sensor is not None:
            hs.reattached += 1
            hs.binary_changed_at = time.time()
            self.reattached += 1
            log.info("policy %s: %s: %s changed: attached again", hs.policy.name, hs.hook.describe(),
                     hs.hook.path)
            if self.manager.pins is not None:
                self.manager._write_manifest()
