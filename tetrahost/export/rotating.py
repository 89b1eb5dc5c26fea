"""Tetragon's JSON export file with size-based rotation (what Tetragon does with lumberjack).

  /var/log/tetragon/tetragon.log                          the live file, mode 0600
  /var/log/tetragon/tetragon-2024-05-01T10-20-30.123.log  a rotated file (.log.gz if compress)

Rotated files are named by the time they were rotated, as lumberjack names
them (Tetragon's exporter uses lumberjack), rather than shifted .1/.2/...:
renaming is then one rename of the live file, and a compression still running
on an older file can never race with a rename of the same name.

Lines are never split: a rotation happens only between lines, before a line
that would take the file past max_bytes (a single line longer than max_bytes
gets a file of its own).  Data goes out with os.write on an O_APPEND fd, one
call per group of whole lines, so a reader (or a crash) sees whole lines.

Compression (gzip) and pruning beyond max_backups run on a helper thread:
gzip of a 10 MiB file takes ~0.2 s, too long for whoever calls write_events.
In the agent this sink itself runs behind ThreadedSink, off the event loop.
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import os
import queue
import re
import shutil
import threading
import time

from tetrahost.export.sinks import LogThrottle, SinkStats

log = logging.getLogger(__name__)

_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}(-\d+)?")


class RotatingFileSink:
    def __init__(self, path: str, max_bytes: int = 10 << 20, max_backups: int = 5,
                 compress: bool = False, mode: int = 0o600):
        self.path = os.path.abspath(path)
        self.name = f"file:{self.path}"
        self.max_bytes = max(1, int(max_bytes))
        self.max_backups = max_backups        # 0 keeps every rotated file (as lumberjack)
        self.compress = compress
        self.mode = mode
        self.stats = SinkStats()
        self.rotations = 0
        self._throttle = LogThrottle(log)
        self._dir, base = os.path.split(self.path)
        self._stem, self._ext = os.path.splitext(base)
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._open()
        self._jobs: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name=f"rotate-{base}", daemon=True)
        self._worker.start()

    # -- the live file ---------------------------------------------------------------
    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode)
        os.fchmod(fd, self.mode)       # an existing file keeps whatever mode it had otherwise
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def write_events(self, batch) -> None:
        """Write every line of the batch, rotating between lines as sizes require."""
        chunk: list[bytes] = []
        chunk_size = 0
        done = 0            # lines known to be in a file
        try:
            for line, _meta in batch:
                data = line.encode("utf-8", "surrogateescape") + b"\n"
                if self._size + chunk_size + len(data) > self.max_bytes and self._size + chunk_size > 0:
                    if chunk:
                        self._write_all(b"".join(chunk))
                        done += len(chunk)
                        self._count(chunk_size, len(chunk))
                        chunk, chunk_size = [], 0
                    self._rotate()
                chunk.append(data)
                chunk_size += len(data)
            if chunk:
                self._write_all(b"".join(chunk))
                done += len(chunk)
                self._count(chunk_size, len(chunk))
        except OSError as exc:
            # ENOSPC, EIO...: count what did not reach the file and go on; the
            # next batch tries again (the disk may have been cleaned meanwhile).
            self.stats.errors += 1
            self.stats.dropped += len(batch) - done
            self._throttle.warning("%s: write failed, %d events lost: %s", self.path, len(batch) - done, exc)

    def _count(self, nbytes: int, nlines: int) -> None:
        self.stats.events += nlines
        self.stats.bytes += nbytes

    def _backup_name(self) -> str:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
        name = os.path.join(self._dir, f"{self._stem}-{stamp}{self._ext}")
        n = 1
        # Several rotations within one millisecond (tiny max_bytes, bursts): keep names unique.
        while os.path.exists(name) or os.path.exists(name + ".gz"):
            name = os.path.join(self._dir, f"{self._stem}-{stamp}-{n}{self._ext}")
            n += 1
        return name

    def _rotate(self) -> None:
        backup = self._backup_name()
        os.rename(self.path, backup)
        os.close(self._fd)
        self._open()
        self.rotations += 1
        self._jobs.put(backup)

    # -- rotated files -------------------------------------------------------------
    def backups(self) -> list[str]:
        """Rotated files, oldest first (names sort by time; the -N suffix sorts after its twin)."""
        names = [n for n in os.listdir(self._dir) if self._is_backup(n)]
        return [os.path.join(self._dir, n) for n in sorted(names, key=self._sort_key)]

    def _stamp(self, name: str) -> str:
        return name.removesuffix(".gz").removesuffix(self._ext)[len(self._stem) + 1:]

    def _is_backup(self, name: str) -> bool:
        return (name.startswith(self._stem + "-") and name.removesuffix(".gz").endswith(self._ext)
                and _STAMP.fullmatch(self._stamp(name)) is not None)

    def _sort_key(self, name: str):
        # "<stem>-2024-05-01T10-20-30.123<ext>[.gz]", twins "...123-2<ext>": by stamp, then twin number.
        stamp = self._stamp(name)
        head, _, tail = stamp.rpartition(".")
        ms, _, twin = tail.partition("-")
        return (head, ms, int(twin) if twin.isdigit() else 0)

    def _work(self) -> None:
        while True:
            backup = self._jobs.get()
            if backup is None:
                return
            try:
                if self.compress:
                    self._gzip(backup)
                self._prune()
            except OSError as exc:
                self.stats.errors += 1
                self._throttle.warning("%s: handling rotated file %s failed: %s", self.path, backup, exc)

    def _gzip(self, path: str) -> None:
        try:
            src = open(path, "rb")
        except FileNotFoundError:
            return              # pruned already (more rotations queued than max_backups)
        tmp = path + ".gz.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, self.mode)
            with src, os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.rename(tmp, path + ".gz")   # the .gz appears complete or not at all
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.unlink(path)

    def _prune(self) -> None:
        if self.max_backups <= 0:
            return
        old = self.backups()
        for path in old[:max(0, len(old) - self.max_backups)]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(60)      # a pending compression finishes: no half-written .gz.tmp left
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

