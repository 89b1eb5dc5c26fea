"""Tetragon's JSON export file with size-based rotation (what Tetragon does with lumberjack).

  /var/log/tetragon/tetragon.log                          the live file, mode 0600
  /var/log/tetragon/tetragon-2024-05-01T10-20-30.123.log  a rotated file (.log.gz if compress)

Rotated files are named by the time they were rotated, as lumberjack names
them (Tetragon's exporter uses lumberjack), rather than shifted .1/.2/...:
renaming is then one rename of the live file, and a compression still running
on an older file can never race with a rename of the same name.

Lines are never split: a rotation happens only between lines, before a line
that would take the file past max_bytes (a single line longer than max_bytes
gets a file of its own).  Data goes out with os.writev on an O_APPEND fd: a
batch's lines are joined and encoded in pieces of about PIECE_BYTES (32 KiB,
reused heap memory: a joined copy of a whole batch, megabytes at up to 4.5 KB a
line, was a fresh mapping and one page fault per line), one writev per 1024
pieces.  Joining a few lines per piece costs less than encoding and ending
each line on its own (1.0 against 1.4 µs per 2.5 KB line here).

Failures (what a hostile or unlucky host does to a log file):
  * ENOSPC/EIO/EFBIG in the middle of a write: the file is ftruncate'd back
    to its last whole line, the events not written are counted lost with the
    errno name as reason (SinkStats.lost_by_reason), and the next batch tries
    again; so the file only holds whole lines, also after a full disk;
  * a partial last line left by a crash of an earlier run is cut at open;
  * the live file deleted or moved (rm -rf of the directory, logrotate
    without copytruncate): before each batch (fstat of the fd + stat of the
    path, two cheap syscalls) the fd is compared with the path by st_dev,
    st_ino and st_nlink, and a new file (and directory, mode 0700) is opened;
    after the batch the check is repeated, and lines written meanwhile to a
    file that was deleted are written again to the new one (lost as
    "file_removed" if that fails).  Events only count as exported once their
    lines are in a file that is still linked.

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

from tetrahost.export.sinks import LogThrottle, SinkStats, errno_reason, lines_of

log = logging.getLogger(__name__)

_IOV_MAX = 1024            # buffers one writev(2) takes (Linux's UIO_MAXIOV)
PIECE_BYTES = 32 << 10     # lines joined into one buffer of about this size
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}(-\d+)?")


class RotatingFileSink:
    def __init__(self, path: str, max_bytes: int = 10 << 20, max_backups: int = 5,
                 compress: bool = False, mode: int = 0o600):
        self.path = os.path.abspath(path)
        self.name = f"file:{self.path}"
        self.wants = ("json",)
        self.max_bytes = max(1, int(max_bytes))
        self.max_backups = max_backups        # 0 keeps every rotated file (as lumberjack)
        self.compress = compress
        self.mode = mode
        self.stats = SinkStats()
        self.rotations = 0
        self.reopens = 0           # live file found deleted or moved, opened anew
        self._throttle = LogThrottle(log)
        self._reopen_log = LogThrottle(log)    # own throttle: must not hide write failures
        self._dir, base = os.path.split(self.path)
        self._stem, self._ext = os.path.splitext(base)
        self._fd = -1
        self._size = 0
        self._ident = (0, 0)       # (st_dev, st_ino) of the open live file
        self._dirty = False        # a failed write's partial line could not be cut yet
        self._pending: list[tuple[bytes, int]] = []   # (piece, its lines) in the live file, not counted yet
        self._counted = 0          # lines of this batch counted as exported
        self._open()
        self._jobs: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name=f"rotate-{base}", daemon=True)
        self._worker.start()

    # -- the live file ---------------------------------------------------------------
    def _open(self) -> None:
        os.makedirs(self._dir, mode=0o700, exist_ok=True)   # the directory may have been removed
        # O_RDWR: _cut_partial_line reads the tail back.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode)
        try:
            os.fchmod(fd, self.mode)   # an existing file keeps whatever mode it had otherwise
            st = os.fstat(fd)
            self._size = st.st_size
            self._ident = (st.st_dev, st.st_ino)
            self._fd = fd
            self._cut_partial_line()   # a crash of an earlier run in the middle of a write
        except BaseException:
            os.close(fd)
            self._fd = -1
            raise

    def _cut_partial_line(self) -> None:
        """Truncate the file back to its last newline, if it does not end with one."""
        end = self._size
        if end == 0 or os.pread(self._fd, 1, end - 1) == b"\n":
            return
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            pos -= step
            nl = os.pread(self._fd, step, pos).rfind(b"\n")
            if nl >= 0:
                pos += nl + 1
                break
        os.ftruncate(self._fd, pos)
        self._size = pos
        log.warning("%s: removed %d bytes of an incomplete last line", self.path, end - pos)

    def _current(self) -> bool:
        """Is the open fd still the file at self.path?  (Refreshes the size: O_APPEND
        writes land at the end, wherever that is now.)"""
        try:
            st = os.fstat(self._fd)
            if st.st_nlink == 0 or (st.st_dev, st.st_ino) != self._ident:
                return False
            path_st = os.stat(self.path)
        except OSError:
            return False
        self._size = st.st_size
        return (path_st.st_dev, path_st.st_ino) == self._ident

    def _reopen(self, why: str) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._open()
        self.reopens += 1
        self._reopen_log.warning("%s: %s, writing to a new file", self.path, why)

    def _ready(self) -> None:
        """Before a batch: a live file that was deleted or moved away is replaced by a
        new one at self.path (logrotate without copytruncate, rm -rf of the directory)."""
        if self._fd < 0:
            self._open()
        elif not self._current():
            self._reopen("the file was removed or moved")

    def _write_pieces(self, pieces: list[tuple[bytes, int]]) -> None:
        """Append pieces of whole lines ((bytes, line count) each) with as few
        write(2) calls as the kernel allows.

        On a failure (ENOSPC, EIO, EFBIG, ...) what was written of the last
        line is cut off again, so the file only ever holds whole lines; the
        lines that did make it are added to self._pending before the OSError
        goes up."""
        start = self._size
        done = 0
        try:
            for k in range(0, len(pieces), _IOV_MAX):
                part = [data for data, _ in pieces[k:k + _IOV_MAX]]
                n = os.writev(self._fd, part)
                done += n
                if n < sum(map(len, part)):     # a short write (a disk filling up): the rest, or its error
                    rest = memoryview(b"".join(part))[n:]
                    while rest:
                        n = os.write(self._fd, rest)
                        done += n
                        rest = rest[n:]
        except OSError:
            data = b"".join(data for data, _ in pieces)
            keep = data.rfind(b"\n", 0, done) + 1
            if keep < done:
                try:
                    os.ftruncate(self._fd, start + keep)
                except OSError as exc:
                    self._throttle.warning("%s: cannot cut a partial line: %s", self.path, exc)
                    self._dirty = True      # _cut_partial_line before the next write
            self._size = start + keep
            written = data.count(b"\n", 0, keep)
            if written:
                self._pending.append((data[:keep], written))
            raise
        self._size += done
        self._pending.extend(pieces)

    def write_events(self, batch) -> None:
        """Write every line of the batch, rotating between lines as sizes require.

        Events are counted exported once their lines are in a rotated file, or
        in the live file while it is still linked at self.path after the
        write.  Lines that went to a file removed meanwhile are written again
        to a new file (counted lost as "file_removed" if that fails too)."""
        lines = lines_of(batch)
        self._pending, self._counted = [], 0
        reason = None
        try:
            self._ready()
            if self._dirty:
                self._cut_partial_line()
                self._dirty = False
            self._write_batch(lines)
            if self._pending and not self._current():
                again, self._pending = self._pending, []
                reason = "file_removed"
                self._reopen("the file was removed while being written")
                self._write_pieces(again)
            self._confirm()
        except OSError as exc:
            # ENOSPC, EIO...: count what did not reach a file and go on; the next
            # batch tries again (the disk may have been cleaned meanwhile).
            self.stats.errors += 1
            self._confirm()             # whole lines written before the failure
            lost = len(lines) - self._counted
            self.stats.lose(lost, reason or errno_reason(exc))
            self._throttle.warning("%s: write failed, %d events lost: %s", self.path, lost, exc)

    def _write_batch(self, lines: list[str]) -> None:
        """Write lines, one write per run of lines between rotations."""
        pieces = encode_pieces(lines)
        if self._size + sum(len(data) for data, _ in pieces) <= self.max_bytes:
            if pieces:                      # the usual case: no rotation inside this batch
                self._write_pieces(pieces)
            return
        # A rotation falls inside the batch: line by line, as sizes require.
        chunk: list[tuple[bytes, int]] = []
        chunk_size = 0
        for line in lines:
            data = encode_lines([line])
            if self._size + chunk_size + len(data) > self.max_bytes and self._size + chunk_size > 0:
                if chunk:
                    self._write_pieces(chunk)
                    chunk, chunk_size = [], 0
                self._rotate()
            chunk.append((data, 1))
            chunk_size += len(data)
        if chunk:
            self._write_pieces(chunk)

    def _confirm(self) -> None:
        """Count the lines written to the live file so far as exported."""
        lines = sum(n for _, n in self._pending)
        self._count(sum(len(data) for data, _ in self._pending), lines)
        self._counted += lines
        self._pending = []

    def _count(self, nbytes: int, nlines: int) -> None:
        self.stats.events += nlines
        self.stats.bytes += nbytes

    def _backup_name(self) -> str:
        # Each stamp a millisecond past the last rotation's at least: names sort by
        # time and the oldest are pruned, so a wall clock stepped back (or a twin
        # name reused after its file was pruned) would prune a newer file.
        ms = max(int(time.time() * 1000), getattr(self, "_last_rotation_ms", 0) + 1)
        self._last_rotation_ms = ms
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"
        name = os.path.join(self._dir, f"{self._stem}-{stamp}{self._ext}")
        n = 1
        # Several rotations within one millisecond (tiny max_bytes, bursts): keep names unique.
        while os.path.exists(name) or os.path.exists(name + ".gz"):
            name = os.path.join(self._dir, f"{self._stem}-{stamp}-{n}{self._ext}")
            n += 1
        return name

    def _rotate(self) -> None:
        backup = self._backup_name()
        try:
            os.rename(self.path, backup)
        except FileNotFoundError:
            # Removed under us: what this batch wrote to it goes to a new file.
            again, self._pending = self._pending, []
            self._reopen("the file was removed while being written")
            if again:
                self._write_pieces(again)
            return
        self._confirm()       # the lines in the renamed file are safe
        os.close(self._fd)
        self._fd = -1
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


# The renderers produce ASCII JSON; backslashreplace keeps the file valid
# UTF-8 even if some future line carried a lone surrogate.
def encode_lines(lines: list[str]) -> bytes:
    """Lines as bytes, each ended by a newline."""
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")


def encode_pieces(lines: list[str]) -> list[tuple[bytes, int]]:
    """The lines, each ended by a newline, as (bytes, line count) pieces of
    about PIECE_BYTES."""
    pieces: list[tuple[bytes, int]] = []
    first, size = 0, 0
    for i, line in enumerate(lines):
        size += len(line)
        if size >= PIECE_BYTES:
            pieces.append((encode_lines(lines[first:i + 1]), i + 1 - first))
            first, size = i + 1, 0
    if first < len(lines):
        pieces.append((encode_lines(lines[first:]), len(lines) - first))
    return pieces
