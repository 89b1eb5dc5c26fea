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
building an entry parses the event's JSON for MESSAGE, work that does not
belong on the ring-buffer consumer's thread.  A worker that falls behind
loses whole batches at the queue, counted in stats.dropped like any
threaded exporter.

Why events do not go through python-systemd's journal.send(): it calls
sd_journal_sendv(), which does a *blocking* sendmsg() on the journal socket.
When journald falls behind (its socket queue full, e.g. during a log storm or
while it rotates/flushes to disk) that call would stall the worker for as
long as journald is stuck: meanwhile the queue fills and drops whole batches,
and the agent's shutdown waits out ThreadedSink's drain timeout.  The native
protocol is a trivial datagram format (KEY=value\\n, or
KEY\\n<le64 length><bytes>\\n when the value holds a newline), so we speak it
with the stdlib socket module and MSG_DONTWAIT: a full queue costs one EAGAIN,
counted in stats.dropped and logged (rate-limited), never a wait.  Entries too
big for one datagram go the way libsystemd sends them: in a sealed memfd
passed with SCM_RIGHTS.

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

from tetrahost.export.sinks import LogThrottle, SinkStats, errno_reason

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "tetrahost"
PRIORITY_WARNING, PRIORITY_INFO = 4, 6


def encode_entry(fields: dict) -> bytes:
    """Native journal protocol datagram for fields {NAME: value}."""
    out = []
    for key, value in fields.items():
        k = key.encode("ascii")
        v = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        if b"\n" in v:
            out.append(k + b"\n" + struct.pack("<Q", len(v)) + v + b"\n")
        else:
            out.append(k + b"=" + v + b"\n")
    return b"".join(out)


class JournalSocket:
    """Non-blocking sender of native-protocol datagrams."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:    # as libsystemd: room for bursts on our side of the socket too
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        """True when sent, False when journald's queue is full (EAGAIN); other OSErrors raise."""
        try:
            self.sock.sendto(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, self.path)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        return self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> bool:
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
                self.sock.sendmsg([], rights, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, self.path)
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
    from tetrahost.export.terminal import terminal_text
    try:
        return format_line(line)
    except (CompactError, ValueError):
        return terminal_text(f"{meta.event_type} {meta.binary}".strip())


def event_fields(line: str, meta) -> dict:
    """The journal fields of one event (empty TETRAGON_* values left out)."""
    fields = {
        "MESSAGE": _compact(line, meta),
        "PRIORITY": PRIORITY_WARNING if meta.enforced else PRIORITY_INFO,
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "TETRAGON_EVENT": meta.event_type,
    }
    for name, value in (("TETRAGON_POLICY", meta.policy), ("TETRAGON_HOOK", meta.hook),
                        ("TETRAGON_ACTION", meta.action), ("TETRAGON_BINARY", meta.binary),
                        ("TETRAGON_PID", meta.pid), ("TETRAGON_EXEC_ID", meta.exec_id),
                        ("TETRAGON_UNIT", meta.unit), ("TETRAGON_CONTAINER", meta.container)):
        if value:
            fields[name] = value
    fields["TETRAGON_JSON"] = line
    return fields


class JournaldSink:
    name = "journald"

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.stats = SinkStats()
        self._sock = JournalSocket(path)
        self._throttle = LogThrottle(log)

    def write_events(self, batch) -> None:
        for i, (line, meta) in enumerate(batch):
            data = encode_entry(event_fields(line, meta))
            try:
                sent = self._sock.send(data)
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
            else:
                self.stats.lose(1, "journald_busy")
                self._throttle.warning("journald is not keeping up (socket queue full): "
                                       "%d events dropped so far", self.stats.dropped)

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
