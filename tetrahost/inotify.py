"""inotify and a one-shot timerfd through ctypes (the stdlib has neither before 3.13).

Both are plain non-blocking fds, so the agent's single-threaded loop can wait
on them with add_reader() like on any socket: no thread, no polling timer.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")       # wd, mask, cookie, len


@dataclass(frozen=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def parse_events(buf: bytes) -> list[InotifyEvent]:
    """Split one read() of an inotify fd into events (names are NUL padded)."""
    events, off = [], 0
    while off + _HEADER.size <= len(buf):
        wd, mask, cookie, length = _HEADER.unpack_from(buf, off)
        raw = buf[off + _HEADER.size: off + _HEADER.size + length]
        events.append(InotifyEvent(wd, mask, cookie, os.fsdecode(raw.split(b"\0", 1)[0])))
        off += _HEADER.size + length
    return events


def complete_on_create(path: str) -> bool:
    """Whether a name that just appeared (IN_CREATE) is complete.  A symlink,
    hard link, FIFO or other special file never gets IN_CLOSE_WRITE: its
    creation is its completion.  A new regular file with one link is still
    being written: its IN_CLOSE_WRITE follows.  Gone already: not complete."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) or st.st_nlink > 1


class Inotify:
    def __init__(self):
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, path: str, mask: int) -> int:
        return _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask), f"inotify_add_watch {path}")

    def rm_watch(self, wd: int) -> None:
        _libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[InotifyEvent]:
        """Every queued event; [] when none (the fd is non-blocking)."""
        events = []
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            if not buf:
                return events
            events.extend(parse_events(buf))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
CLOCK_MONOTONIC = 1


class OneShotTimer:
    """A timerfd that becomes readable once, `delay` seconds after arm()."""

    def __init__(self):
        self.fd = _check(_libc.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC), "timerfd_create")

    def arm(self, delay: float) -> None:
        delay = max(delay, 1e-6)      # 0 would disarm
        spec = _Itimerspec()
        spec.it_value.tv_sec = int(delay)
        spec.it_value.tv_nsec = int((delay - int(delay)) * 1e9)
        _check(_libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None), "timerfd_settime")

    def consume(self) -> bool:
        """True if the timer expired since the last call (clears the readable state)."""
        try:
            return len(os.read(self.fd, 8)) == 8
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
