"""The HTTP side of /metrics: one thread, non-blocking sockets, a fixed number of connections.

A thread per connection (what wsgiref/socketserver give) lets anyone who can
reach the port hold one thread and one file descriptor per connection for as
long as they like; the agent's descriptors are shared with the control socket,
the policy loader and the exporters, so 1,000 slow connections would starve
enforcement.  Here instead:
  * at most MAX_CONNECTIONS sockets are open at a time; a new connection when
    full evicts the oldest connection still sending its request (a slow or
    idle client), else the oldest one still being written to;
  * each connection has CONNECTION_TIMEOUT seconds in total, from accept to
    the last byte of the reply; MAX_REQUEST_BYTES of request head at most;
  * all I/O is non-blocking in one selector loop, so a slow peer costs
    nothing but its slot; a new connection is read and answered in the same
    turn when its request is already there (a real scraper's is), so a flood
    of slow connections cannot push a scrape out;
  * with every descriptor of the process in use, a spare one is released to
    accept and close a connection, so the backlog cannot spin the loop;
  * every connection is closed after one reply (Connection: close).
Each outcome is counted in `stats` (tetrahost_metrics_connections_total).
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
CONNECTION_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 8192
ACCEPT_BATCH = 64
RESULTS = ("served", "evicted", "timed_out", "too_large", "bad_request", "refused")

# render(method, path, accept_header) -> (status line, content type, body)
Renderer = Callable[[str, str, str], "tuple[str, str, bytes]"]


class _Conn:
    __slots__ = ("sock", "deadline", "accepted", "rbuf", "out", "writing")

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.accepted = now
        self.deadline = now + CONNECTION_TIMEOUT
        self.rbuf = bytearray()
        self.out = memoryview(b"")
        self.writing = False


class BoundedHTTPServer:
    def __init__(self, host: str, port: int, render: Renderer, max_connections: int = MAX_CONNECTIONS):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(128)
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.render = render
        self.max_connections = max_connections
        self.stats = dict.fromkeys(RESULTS, 0)
        self._conns: dict[int, _Conn] = {}
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._spare_fd: int | None = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._stop = False

    # -- lifecycle (serve_forever runs on its own thread; shutdown from another) ---------
    def serve_forever(self) -> None:
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop:
                now = time.monotonic()
                timeout = min((c.deadline for c in self._conns.values()), default=now + 1.0) - now
                for key, events in self._sel.select(max(0.0, min(timeout, 1.0))):
                    if key.data is None:
                        self._accept()
                    elif key.data != "wake":
                        self._step(key.data, events)
                self._expire(time.monotonic())
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._sel.close()
            self.sock.close()
            self._wake_r.close()
            if self._spare_fd is not None:
                os.close(self._spare_fd)

    def shutdown(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._wake_w.close()

    # -- connections ----------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed_one()
                return
            sock.setblocking(False)
            if len(self._conns) >= self.max_connections:
                # a slow sender first, else the oldest reply still in flight: both had their chance
                victim = min(self._conns.values(), key=lambda c: (c.writing, c.accepted))
                self.stats["evicted"] += 1
                self._close(victim)
            conn = _Conn(sock, time.monotonic())
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._step(conn, selectors.EVENT_READ)     # a scraper's request is usually here already

    def _shed_one(self) -> None:
        self.stats["refused"] += 1
        if self._spare_fd is None:
            return
        os.close(self._spare_fd)
        try:
            self.sock.accept()[0].close()
        except OSError:
            pass
        finally:
            self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock.fileno(), None) is not None:
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self.stats["timed_out"] += 1
            self._close(conn)

    def _step(self, conn: _Conn, events: int) -> None:
        try:
            if not conn.writing and events & selectors.EVENT_READ:
                self._read(conn)
            if conn.writing:
                self._write(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:                       # reset by the peer
            self._close(conn)

    def _read(self, conn: _Conn) -> None:
        data = conn.sock.recv(MAX_REQUEST_BYTES + 1 - len(conn.rbuf))
        if not data:
            self._close(conn)
            return
        conn.rbuf += data
        end = conn.rbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.rbuf.find(b"\n\n")
        if end < 0:
            if len(conn.rbuf) > MAX_REQUEST_BYTES:
                self.stats["too_large"] += 1
                self._reply(conn, "431 Request Header Fields Too Large", "text/plain", b"request too large\n")
            return
        self._respond(conn, bytes(conn.rbuf[:end]))

    def _respond(self, conn: _Conn, head: bytes) -> None:
        lines = head.decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.stats["bad_request"] += 1
            self._reply(conn, "400 Bad Request", "text/plain", b"bad request\n")
            return
        method, target = parts[0], parts[1]
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        try:
            status, ctype, body = self.render(method, target, accept)
        except Exception:                  # a collector bug: answer, keep serving
            log.exception("metrics: rendering failed")
            status, ctype, body = "500 Internal Server Error", "text/plain", b"internal error\n"
        self.stats["served"] += 1
        self._reply(conn, status, ctype, b"" if method == "HEAD" else body, len(body))

    def _reply(self, conn: _Conn, status: str, ctype: str, body: bytes, length: int | None = None) -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                f"{len(body) if length is None else length}\r\nConnection: close\r\n\r\n").encode("latin-1")
        conn.out = memoryview(head + body)
        conn.writing = True
        self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Conn) -> None:
        n = conn.sock.send(conn.out)
        conn.out = conn.out[n:]
        if not conn.out:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._close(conn)
