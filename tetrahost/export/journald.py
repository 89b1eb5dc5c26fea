"""Events as structured journal entries, and the agent's own logs to the journal.

Each event becomes one entry:

  MESSAGE=🚀 process host1 /usr/bin/curl https://example.org     (the compact one-liner)
  PRIORITY=6 (info), 4 (warning) when the policy action was enforced (SIGKILL, OVERRIDE...)
  SYSLOG_IDENTIFIER=tetrahost
  TETRAGON_EVENT=PROCESS_EXEC  TETRAGON_BINARY=/usr/bin/curl  TETRAGON_PID=4242
  TETRAGON_EXEC_ID=...  TETRAGON_UNIT=ssh.service  TETRAGON_POLICY=...  TETRAGON_HOOK=...
  TETRAGON_ACTION=SIGKILL  TETRAGON_CONTAINER=...  (empty ones are left out)
  TETRAGON_JSON={"process_exec":...}                       (the full Tetragon JSON line)

so `journalctl -u tetrahost TETRAGON_ACTION=SIGKILL` and `journalctl -o json` work.

In the agent JournaldSink runs behind ThreadedSink (tetrahost/export/sinks.py):
MESSAGE is the Event's compact line, made once on the loop's thread from the
event's dict, or for a process event from its pieces (TetragonJSON.compact_line),
shared with a compact stdout, never parsed back from the JSON;
encoding and sending the entries happen on the worker thread.  A worker that falls behind
loses whole batches at the queue, counted in stats.dropped like any
threaded exporter.

Why events do not go through python-systemd's journal.send(): it calls
sd_journal_sendv(), which does a *blocking* sendmsg() on the journal socket,
for as long as journald is stuck (its socket queue full, e.g. while it
rotates or flushes to disk, or is gone without its socket file).  The native
protocol is a trivial datagram format (KEY=value\\n, or
KEY\\n<le64 length><bytes>\\n when the value holds a newline), so we speak it
with the stdlib socket module and choose how long to wait: an entry is first
offered with MSG_DONTWAIT; when the queue is full (EAGAIN) the worker waits
for room, with SO_SNDTIMEO, as long as journald keeps taking entries.  A
burst (an agent reading what its predecessor's programs wrote during a
restart: hundreds of events at once) outruns journald's queue
(net.unix.max_dgram_qlen datagrams) on a slow host without losing one: it
only takes longer, off the ring-buffer consumer's thread.  Only a journald
that accepted nothing for MAX_STALL seconds costs events: each entry of the
batch then gets one non-blocking try, and those refused are counted in
stats.dropped (reason journald_busy) and logged (rate-limited).  Entries too
big for one datagram go the way libsystemd sends them: in a sealed memfd
passed with SCM_RIGHTS.

Not covered here: journald's own rate limit (RateLimitBurst= per unit)
discards entries it has accepted, which no sender can see or count; the
packaged unit turns it off for tetrahost (LogRateLimitIntervalSec=0,
docs/packaging.md).

The agent's own log records go through python-systemd's JournalHandler when
the module is installed (Debian: python3-systemd), else through
NativeJournalHandler over the same protocol.  Log records are rare, so there
the blocking send of libsystemd is acceptable.
"""
from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import socket
import struct
import time

from tetrahost.events.event import Event
from tetrahost.export.sinks import LogThrottle, SinkStats, errno_reason

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "tetrahost"
PRIORITY_WARNING, PRIORITY_INFO = 4, 6


def encode_entry(fields: dict) -> bytes:
    """Native journal protocol datagram for fields {NAME: value}."""
    # Pieces joined once: the event's JSON (kilobytes) is copied into the datagram only there.
    out: list[bytes] = []
    for key, value in fields.items():
        v = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        if b"\n" in v:
            out += (key.encode("ascii"), b"\n", struct.pack("<Q", len(v)), v, b"\n")
        else:
            out += (key.encode("ascii"), b"=", v, b"\n")
    return b"".join(out)


class JournalSocket:
    """Sender of native-protocol datagrams that waits for room only when asked to."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._timeout = None            # the SO_SNDTIMEO set last (one setsockopt per change)
        try:    # as libsystemd: room for bursts on our side of the socket too
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        except OSError:
            pass

    def send(self, data: bytes, wait: float = 0.0) -> bool:
        """True when sent; False when journald's queue stayed full (EAGAIN) for
        `wait` seconds (0: not waited for at all); other OSErrors raise."""
        if self._send(data, socket.MSG_DONTWAIT):
            return True
        if wait <= 0:
            return False
        self._set_send_timeout(wait)
        return self._send(data, 0)      # blocks until journald reads, at most `wait`

    def _set_send_timeout(self, seconds: float) -> None:
        usec = max(1000, int(seconds * 1e6))        # (0 would mean "wait forever")
        if usec != self._timeout:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", *divmod(usec, 1000000)))
            self._timeout = usec

    def _send(self, data: bytes, flags: int) -> bool:
        try:
            self.sock.sendto(data, flags | socket.MSG_NOSIGNAL, self.path)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        return self._send_memfd(data, flags)

    def _send_memfd(self, data: bytes, flags: int) -> bool:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            # journald accepts only a memfd nobody can change any more.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            # sendmsg, not socket.send_fds: Python 3.11's drops its flags and
            # address, so on our unconnected socket every memfd failed (ENOTCONN).
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            try:
                self.sock.sendmsg([], rights, flags | socket.MSG_NOSIGNAL, self.path)
            except BlockingIOError:
                return False
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()


def journal_available(path: str = JOURNAL_SOCKET) -> bool:
    """Is a journald listening on path? (The socket file outlives a stopped journald.)"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _compact(line: str, meta) -> str:
    from tetrahost.export.compact import CompactError, format_line
    try:
        return format_line(line)
    except (CompactError, ValueError):
        return _fallback(meta)


def _fallback(meta) -> str:
    """MESSAGE of an event the compact form cannot show (rate_limit_info)."""
    from tetrahost.export.terminal import terminal_text
    return terminal_text(f"{meta.event_type} {meta.binary}".strip())


def _meta_fields(meta) -> tuple:
    """(name, value) of the TETRAGON_* fields an event's meta gives, in order
    (the empty ones are left out by the callers)."""
    return (("TETRAGON_POLICY", meta.policy), ("TETRAGON_HOOK", meta.hook),
            ("TETRAGON_ACTION", meta.action), ("TETRAGON_BINARY", meta.binary),
            ("TETRAGON_PID", meta.pid), ("TETRAGON_EXEC_ID", meta.exec_id),
            ("TETRAGON_UNIT", meta.unit), ("TETRAGON_CONTAINER", meta.container))


def event_fields(line: str, meta, message: str = "") -> dict:
    """The journal fields of one event (empty TETRAGON_* values left out);
    message: its compact line when made already, else made from the line."""
    fields = {
        "MESSAGE": message or _compact(line, meta),
        "PRIORITY": PRIORITY_WARNING if meta.enforced else PRIORITY_INFO,
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "TETRAGON_EVENT": meta.event_type,
    }
    for name, value in _meta_fields(meta):
        if value:
            fields[name] = value
    fields["TETRAGON_JSON"] = line
    return fields


def event_entry(line: str, meta, message: str) -> bytes:
    """encode_entry(event_fields(line, meta, message)), the same bytes, for
    the entry of every event the agent sends: the short fields as one string,
    and the message (not ASCII: its icon) and the JSON line encoded apart, so
    the kilobyte line is not widened to the message's string kind and copied
    again for each field (3.1 -> 1.1 µs per entry).  A value holding a
    newline needs the protocol's length-prefixed form: such an entry, or one
    without a message, takes the general path."""
    middle = (f"\nPRIORITY={PRIORITY_WARNING if meta.enforced else PRIORITY_INFO}\n"
              f"SYSLOG_IDENTIFIER={IDENTIFIER}\nTETRAGON_EVENT={meta.event_type}\n")
    fields = 4
    for name, value in _meta_fields(meta):
        if value:
            middle += f"{name}={value}\n"
            fields += 1
    if not message or "\n" in message or "\n" in line or middle.count("\n") != fields:
        return encode_entry(event_fields(line, meta, message))
    return b"".join((b"MESSAGE=", message.encode("utf-8", "surrogateescape"),
                     middle.encode("utf-8", "surrogateescape"), b"TETRAGON_JSON=",
                     line.encode("utf-8", "surrogateescape"), b"\n"))


# Seconds journald may accept nothing (its queue full) before the entries
# still to send are dropped and counted.  A journald that takes entries, however
# slowly, is waited for; the worker's queue (ThreadedSink) bounds what waits.
MAX_STALL = 5.0


class JournaldSink:
    name = "journald"
    wants = ("json", "compact")

    def __init__(self, path: str = JOURNAL_SOCKET, max_stall: float = MAX_STALL):
        self.path = path
        self.max_stall = max_stall
        self.stats = SinkStats()
        self._sock = JournalSocket(path)
        self._throttle = LogThrottle(log)

    def write_events(self, batch) -> None:
        """Runs on ThreadedSink's worker: it may wait for journald (see MAX_STALL)."""
        deadline = time.monotonic() + self.max_stall      # moved on by every entry journald takes
        for i, item in enumerate(batch):
            if type(item) is Event:
                data = event_entry(item.json, item.meta, item.compact or _fallback(item.meta))
            else:                   # a (line, meta) pair from outside the agent
                data = encode_entry(event_fields(item[0], item[1]))
            try:
                sent = self._sock.send(data, wait=deadline - time.monotonic())
            except OSError as exc:
                # No journald (ENOENT/ECONNREFUSED) or another failure: the rest
                # of the batch would fail the same way; count it all and go on.
                self.stats.errors += 1
                self.stats.lose(len(batch) - i, errno_reason(exc))
                self._throttle.warning("journald: cannot send to %s, %d events lost (%d in total): %s",
                                       self.path, len(batch) - i, self.stats.dropped, exc)
                return
            if sent:
                self.stats.events += 1
                self.stats.bytes += len(data)
                deadline = time.monotonic() + self.max_stall
            else:
                self.stats.lose(1, "journald_busy")
                self._throttle.warning("journald took no entry for %.0fs (socket queue full): "
                                       "%d events dropped so far", self.max_stall, self.stats.dropped)

    def close(self) -> None:
        self._sock.close()


class NativeJournalHandler(logging.Handler):
    """logging -> journal over the native protocol (used when python-systemd is missing)."""

    _PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    def __init__(self, path: str = JOURNAL_SOCKET, identifier: str = IDENTIFIER):
        super().__init__()
        self.identifier = identifier
        self._sock = JournalSocket(path)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {"MESSAGE": self.format(record),
                      "PRIORITY": self._PRIORITIES.get(record.levelno, 6 if record.levelno < 30 else 3),
                      "SYSLOG_IDENTIFIER": self.identifier, "LOGGER": record.name,
                      "CODE_FILE": record.pathname, "CODE_LINE": record.lineno, "CODE_FUNC": record.funcName}
            self._sock.send(encode_entry(fields))   # a full journal drops a log line, never blocks
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def log_handler(path: str = JOURNAL_SOCKET) -> logging.Handler:
    """A handler sending the agent's logs to the journal: python-systemd's if installed."""
    if path == JOURNAL_SOCKET:
        try:
            from systemd.journal import JournalHandler
            return JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
        except ImportError:
            pass
    return NativeJournalHandler(path)


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=dev:ino when stderr is connected to the journal."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)
