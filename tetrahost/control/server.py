"""The control socket, served from the agent's own loop.

Why in the loop and not in a thread: every request reads or changes agent
state (policies, counters) that the loop mutates; serving from the loop needs
no locks and cannot race a policy replace.  What keeps a client from ever
slowing or starving the agent (docs/control-protocol.md, "Limits"):
  * every socket is non-blocking; a send that does not complete leaves the
    rest in that client's queue, and the client's fd is put in a private
    epoll set (EPOLLOUT) whose own fd is registered with the loop (add_reader):
    the loop wakes when some queue can drain, never polls on a timer;
  * a request client gets its next reply only after taking the previous
    one: while a reply waits, the server stops reading from that client, so
    pipelined requests cannot pile up replies; a reply not taken within
    WRITE_TIMEOUT disconnects the client;
  * a stream's queue is bounded (queue_bytes); events that do not fit are
    dropped for THAT client only, counted, and the client is told with a
    {"dropped": N, "dropped_total": M} line once it catches up;
  * a frame is at most protocol.MAX_FRAME bytes and must be complete within
    FRAME_TIMEOUT of its first byte; a silent request client is closed after
    IDLE_TIMEOUT;
  * at most max_clients connections: a new one evicts the least useful
    (idle first, then slow senders, unread replies, lagging streams; oldest
    first), so idle connections can never lock out `tetra status`;
  * unmatched events are filtered out on EventMeta before any encoding.

Access: the socket file is mode 0600 owned by root, and SO_PEERCRED is
checked on accept (uid 0 only) in case someone loosens the mode.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import time
from typing import TYPE_CHECKING

from tetrahost.control import protocol
from tetrahost.control.connection import Client, listen_unix, send_and_close
from tetrahost.control.filters import parse_filter
from tetrahost.control.protocol import FrameTooLarge, ProtocolError
from tetrahost.control.policy_ops import PolicyOperations
from tetrahost.control.status import agent_status, policy_list
from tetrahost.events.event import metas_of

if TYPE_CHECKING:
    from tetrahost.runtime.policy_files import PolicyFiles

log = logging.getLogger(__name__)

QUEUE_BYTES = 4 << 20      # a stream's output queue
MAX_CLIENTS = 256
FRAME_TIMEOUT = 10.0       # seconds from a frame's first byte to its newline
WRITE_TIMEOUT = 10.0       # seconds a request client may leave a reply unread
IDLE_TIMEOUT = 120.0       # seconds a request client may stay silent between requests
ACCEPT_BATCH = 64          # connections accepted per loop turn: the loop also has events to drain
SWEEP_INTERVAL = 1.0


class ControlServer:
    def __init__(self, path: str = protocol.DEFAULT_SOCKET, queue_bytes: int = QUEUE_BYTES,
                 max_clients: int = MAX_CLIENTS, policy_files: PolicyFiles | None = None):
        """policy_files: what `tracingpolicy add/delete` write to and remove
        from (tetrahost.runtime.policy_files); None: they are refused."""
        self.path = path
        self.policy_files = policy_files
        self.queue_bytes = queue_bytes
        self.max_clients = max_clients
        self.name = f"control:{path}"
        self.loop = None                  # the agent's EventLoop, from start()
        self.status = None                # the agent's StatusBoard
        self.exporters = None
        self.policy_ops = PolicyOperations(policy_files, None, None, {})   # until start(): no manager
        self.sock: socket.socket | None = None
        self.clients: dict[int, Client] = {}
        self.dropped_total = 0
        self.refused = 0               # not root, or no fd left to serve them
        self.evicted = 0               # closed to make room for a newer client
        self.timed_out = 0             # partial frame, unread reply or idle past its timeout
        self.too_large = 0             # frames over protocol.MAX_FRAME
        # policy name -> events whose action was enforced, since the agent started
        # (across versions of the policy: records of retired hooks count too);
        # `policy_list` reports it.  Events per policy are counted on the hooks
        # (HookState.events) and, for metrics, by PolicyEventCounter.
        self.enforcements: dict[str, int] = {}
        self._wep: select.epoll | None = None
        self._spare_fd: int | None = None

    # -- component ---------------------------------------------------------------------
    def start(self, services) -> None:
        self.loop, self.status, self.exporters = services.loop, services.status, services.exporters
        self.policy_ops = PolicyOperations(self.policy_files, services.policies, self.status, self.enforcements)
        self.sock = listen_unix(self.path)
        self._wep = select.epoll()
        # held so that, with every fd in use, a connection can still be accepted and closed
        # instead of staying in the backlog and waking the loop forever (see _accept)
        self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.loop.add_reader(self.sock.fileno(), self._accept)
        self.loop.add_reader(self._wep.fileno(), self._on_writable)
        self.loop.add_timer(SWEEP_INTERVAL, self._sweep)
        self.exporters.add(self)          # events reach us with the other exporters' batches
        self.status.add_section("control", self.describe)
        log.info("control socket listening on %s", self.path)

    def stop(self) -> None:
        if self.exporters is not None:
            self.exporters.remove(self)
        for client in list(self.clients.values()):
            self._close(client)
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        if self._wep is not None:
            self.loop.remove_reader(self._wep.fileno())
            self._wep.close()
            self._wep = None
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None

    def close(self) -> None:       # as a sink: the agent closes sinks after stopping components
        pass

    # -- connections -------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed_one()
                else:
                    log.warning("control socket accept failed: %s", exc)
                return
            sock.setblocking(False)
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != 0:
                self.refused += 1
                log.warning("control socket: refused pid %d uid %d: not root", pid, uid)
                send_and_close(sock, protocol.error("permission denied: root only"))
                continue
            self.adopt(sock)

    def adopt(self, sock: socket.socket) -> Client:
        """Serve an accepted, non-blocking connection, evicting the least active client if full."""
        if len(self.clients) >= self.max_clients:
            self._evict()
        client = Client(sock, time.monotonic())
        self.clients[client.fd] = client
        self._set_reading(client, True)
        return client

    def _shed_one(self) -> None:
        """Out of fds: take one connection off the backlog with the spare fd and refuse it."""
        self.refused += 1
        if self._spare_fd is None:
            return
        os.close(self._spare_fd)
        try:
            sock, _ = self.sock.accept()
            send_and_close(sock, protocol.error("the agent is out of file descriptors", code=protocol.TOO_MANY_CLIENTS))
        except OSError:
            pass
        finally:
            self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        log.warning("control socket: out of file descriptors; refused a connection")

    def _evict(self) -> None:
        victim = min(self.clients.values(), key=Client.rank)
        self.evicted += 1
        self._drop(victim, f"too many clients ({self.max_clients}); this connection was the least active",
                   protocol.EVICTED)

    def _drop(self, client: Client, message: str, code: str) -> None:
        """Close now, telling the client why if a line boundary allows (never blocks)."""
        if not client.out:
            try:
                client.sock.send(protocol.error(message, code=code))
            except OSError:
                pass
        self._close(client)

    def _close(self, client: Client) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        self.loop.remove_reader(client.fd)
        if client.want_write:
            self._wep.unregister(client.fd)
        client.sock.close()

    def _set_reading(self, client: Client, on: bool) -> None:
        if on == client.reading or client.fd not in self.clients:
            return
        if on:
            self.loop.add_reader(client.fd, lambda c=client: self._on_readable(c))
        else:
            self.loop.remove_reader(client.fd)
        client.reading = on

    def _on_readable(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:                       # the client went away (Ctrl-C, done)
            self._close(client)
            return
        self.feed(client, data)

    def feed(self, client: Client, data: bytes) -> None:
        """Bytes from a client: frames are answered in order, one reply in flight at a time."""
        now = client.last_active = time.monotonic()
        if client.stream or client.closing:
            return                         # a stream takes no further requests
        try:
            frames = client.reader.feed(data)
        except FrameTooLarge as exc:
            self.too_large += 1
            client.pending.clear()
            self._send(client, protocol.error(str(exc), code=protocol.FRAME_TOO_LARGE, limit=protocol.MAX_FRAME))
            client.closing = True          # the rest of the frame is still coming: no way to resync
            self._flush(client)
            return
        client.frame_started = (client.frame_started or now) if client.reader.partial else None
        client.pending.extend(frames)
        self._serve_pending(client)

    def _serve_pending(self, client: Client) -> None:
        while client.pending and not client.out and not client.stream and client.fd in self.clients:
            self._handle(client, client.pending.popleft())
        if client.stream:
            client.pending.clear()
        # a client that has not taken its reply is not read from: no replies pile up for it
        # (a stream is always read, to notice its end; what it sends is ignored)
        self._set_reading(client, client.stream or not client.out)

    def _sweep(self) -> None:
        if self._wep is None:          # stopped (the agent's timers cannot be removed)
            return
        now = time.monotonic()
        for client in list(self.clients.values()):
            if client.frame_started is not None and now - client.frame_started > FRAME_TIMEOUT:
                why, code = f"request frame not completed within {FRAME_TIMEOUT:g} s", protocol.FRAME_TIMEOUT
            elif not client.stream and client.out_since is not None and now - client.out_since > WRITE_TIMEOUT:
                why, code = f"reply not read within {WRITE_TIMEOUT:g} s", protocol.REPLY_TIMEOUT
            elif (not client.stream and not client.out and not client.pending
                  and now - client.last_active > IDLE_TIMEOUT):
                why, code = f"idle for {IDLE_TIMEOUT:g} s", protocol.IDLE_TIMEOUT
            else:
                continue
            self.timed_out += 1
            log.info("control socket: closing a client: %s", why)
            self._drop(client, why, code)

    # -- requests ----------------------------------------------------------------------
    def _handle(self, client: Client, line: bytes) -> None:
        try:
            req = protocol.parse_request(line)
            op = req["op"]
            if op.startswith("policy_") and op != "policy_list":
                answer = self.policy_ops.handle(op, req)
            else:
                answer = getattr(self, "_op_" + op)(client, req)
        except ProtocolError as exc:
            answer = protocol.error(str(exc))
        except Exception as exc:      # a bug answering one client must not take the agent down
            log.exception("control request failed")
            answer = protocol.error(f"internal error: {exc}")
        self._send(client, answer)

    def _op_status(self, client, req) -> bytes:
        return protocol.reply(status=agent_status(self.status.now()))

    def _op_policy_list(self, client, req) -> bytes:
        return protocol.reply(policies=policy_list(self.status.now(), self.enforcements))

    def _op_getevents(self, client, req) -> bytes:
        client.filter = parse_filter(req.get("filter"))
        return protocol.reply(stream="events")

    # -- sending -------------------------------------------------------------------------
    def write_events(self, batch) -> None:
        for meta in metas_of(batch):        # the line is made only if a client streams it
            if meta.enforced and meta.policy:
                self.enforcements[meta.policy] = self.enforcements.get(meta.policy, 0) + 1
        streams = [c for c in self.clients.values() if c.stream]
        if not streams:
            return
        encoded: dict[int, bytes] = {}
        for client in streams:
            f = client.filter
            chunks = []
            for i, (line, meta) in enumerate(batch):
                if f.matches(meta):
                    data = encoded.get(i)
                    if data is None:
                        data = encoded[i] = protocol.event_line(line)
                    chunks.append(data)
            if chunks:
                self._send_events(client, chunks)

    def _send_events(self, client: Client, chunks: list[bytes]) -> None:
        if client.dropped and client.queued < self.queue_bytes // 2:
            self._notify_dropped(client)
        room = self.queue_bytes - client.queued
        take = []
        for data in chunks:
            if len(data) > room:
                break
            room -= len(data)
            take.append(data)
        lost = len(chunks) - len(take)
        if lost:
            client.dropped += lost
            client.dropped_total += lost
            self.dropped_total += lost
        if take:
            client.sent_events += len(take)
            self._send(client, b"".join(take))

    def _send(self, client: Client, data: bytes) -> None:
        client.queue(data, time.monotonic())
        self._flush(client)

    def _flush(self, client: Client) -> None:
        try:
            client.send_some()
        except OSError:                     # EPIPE, ECONNRESET: the client is gone
            self._close(client)
            return
        self._want_write(client, bool(client.out))
        if client.closing and not client.out:
            self._close(client)

    def _want_write(self, client: Client, want: bool) -> None:
        if want == client.want_write or client.fd not in self.clients:
            return
        if want:
            self._wep.register(client.fd, select.EPOLLOUT)
        else:
            self._wep.unregister(client.fd)
        client.want_write = want

    def _on_writable(self) -> None:
        for fd, _ in self._wep.poll(0):
            client = self.clients.get(fd)
            if client is None:
                continue
            self._flush(client)
            if client.fd not in self.clients or client.out:
                continue
            if client.stream:
                if client.dropped and client.queued < self.queue_bytes // 2:
                    self._notify_dropped(client)
            elif not client.closing:
                self._serve_pending(client)

    def _notify_dropped(self, client: Client) -> None:
        self._send(client, protocol.encode({"dropped": client.dropped, "dropped_total": client.dropped_total}))
        client.dropped = 0

    def describe(self) -> dict:
        """The server's part of `tetra status` (its status section)."""
        return {"socket": self.path, "clients": len(self.clients), "max_clients": self.max_clients,
                "streams": sum(c.stream for c in self.clients.values()),
                "dropped_total": self.dropped_total, "refused": self.refused, "evicted": self.evicted,
                "timed_out": self.timed_out, "too_large": self.too_large}
