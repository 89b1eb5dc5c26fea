"""One control-socket client: its frame reader, bounded output queue and timestamps;
and the listening socket itself (listen_unix).

The server (server.py) decides what to do with a client; this module keeps
the per-connection state and the two facts the server's limits rest on:
  * rank(): which client goes first when the server is full (idle before
    busy, request clients before streams, oldest first), so a pile of idle
    connections can never lock out `tetra status`;
  * send_some(): a non-blocking drain of the output queue; what the kernel
    does not take stays queued, and the server never adds to a request
    client's queue while a reply is still waiting (see ControlServer).
"""
from __future__ import annotations

import collections
import os
import socket
import stat

from tetrahost.control.protocol import FrameReader

# eviction classes, lowest evicted first
IDLE, PARTIAL, UNREAD_REPLY, LAGGING_STREAM, STREAM = range(5)


class Client:
    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = FrameReader()
        self.pending: collections.deque[bytes] = collections.deque()   # frames not yet answered
        self.out: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.filter = None             # set: this client streams events
        self.dropped = 0               # not yet reported to the client
        self.dropped_total = 0
        self.sent_events = 0
        self.closing = False           # close once the queue is flushed
        self.want_write = False        # registered for EPOLLOUT
        self.reading = False           # registered with the agent's loop for reads
        self.connected_at = now
        self.last_active = now         # last byte received
        self.frame_started: float | None = None   # first byte of an unfinished frame
        self.out_since: float | None = None       # the output queue became non-empty

    @property
    def stream(self) -> bool:
        return self.filter is not None

    def rank(self) -> tuple[int, float]:
        if self.stream:
            return (LAGGING_STREAM if self.out or self.dropped else STREAM, self.connected_at)
        if self.out or self.pending:
            return (UNREAD_REPLY, self.out_since or self.last_active)
        if self.reader.partial:
            return (PARTIAL, self.frame_started or self.last_active)
        return (IDLE, self.last_active)

    def queue(self, data: bytes, now: float) -> None:
        if not self.out:
            self.out_since = now
        self.out.append(data)
        self.queued += len(data)

    def send_some(self) -> None:
        """Send what the socket takes now; OSError (EPIPE, ECONNRESET) means the client is gone."""
        try:
            while self.out:
                data = self.out[0]
                n = self.sock.send(data)
                self.queued -= n
                if n < len(data):
                    self.out[0] = data[n:]
                    return
                self.out.popleft()
        except (BlockingIOError, InterruptedError):
            return
        self.out_since = None


def listen_unix(path: str) -> socket.socket:
    """The listening socket at path, mode 0600 root, replacing only a dead agent's socket."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)    # a live agent with a full backlog must not hang our start
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)      # left by an agent that died
        except OSError:          # timed out: alive but busy
            raise RuntimeError(f"another agent is serving {path}") from None
        else:
            raise RuntimeError(f"another agent is serving {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)       # never visible with a wider mode, not even for a moment
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    os.chown(path, 0, 0)
    sock.listen(64)
    return sock


def send_and_close(sock: socket.socket, data: bytes) -> None:
    """A last word to a connection that is not kept (never blocks: what does not fit is lost)."""
    try:
        sock.send(data)
    except OSError:
        pass
    sock.close()
