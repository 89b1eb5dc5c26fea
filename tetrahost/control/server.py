"""The control socket, served from the agent's own loop.

Why in the loop and not in a thread: every request reads or changes agent
state (policies, counters) that the loop mutates; serving from the loop needs
no locks and cannot race a policy replace.  What keeps a client from ever
slowing the agent:
  * every socket is non-blocking; a send that does not complete leaves the
    rest in that client's queue, and the client's fd is put in a private
    epoll set (EPOLLOUT) whose own fd is registered with agent.add_reader():
    the loop wakes when some queue can drain, never polls on a timer;
  * each queue is bounded (queue_bytes); events that do not fit are dropped
    for THAT client only, counted, and the client is told with a
    {"dropped": N, "dropped_total": M} line once it catches up;
  * unmatched events are filtered out on EventMeta before any encoding.

Access: the socket file is mode 0600 owned by root, and SO_PEERCRED is
checked on accept (uid 0 only) in case someone loosens the mode.
"""
from __future__ import annotations

import collections
import logging
import os
import select
import socket
import stat
import struct

from tetrahost.control import protocol
from tetrahost.control.filters import parse_filter
from tetrahost.control.protocol import ProtocolError
from tetrahost.control.status import agent_status, policy_list

log = logging.getLogger(__name__)

QUEUE_BYTES = 4 << 20
MAX_CLIENTS = 256


class Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.out: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.filter = None             # set: this client streams events
        self.dropped = 0               # not yet reported to the client
        self.dropped_total = 0
        self.sent_events = 0
        self.closing = False           # close once the queue is flushed
        self.want_write = False        # registered for EPOLLOUT


class ControlServer:
    def __init__(self, path: str = protocol.DEFAULT_SOCKET, queue_bytes: int = QUEUE_BYTES,
                 max_clients: int = MAX_CLIENTS):
        self.path = path
        self.queue_bytes = queue_bytes
        self.max_clients = max_clients
        self.name = f"control:{path}"
        self.agent = None
        self.sock: socket.socket | None = None
        self.clients: dict[int, Client] = {}
        self.dropped_total = 0
        self.refused = 0
        # policy name -> events whose action was enforced, since the agent started
        # (across versions of the policy: records of retired hooks count too);
        # `policy_list` reports it.  Events per policy are counted on the hooks
        # (HookState.events) and, for metrics, by PolicyEventCounter.
        self.enforcements: dict[str, int] = {}
        self._wep: select.epoll | None = None

    # -- component ---------------------------------------------------------------------
    def start(self, agent) -> None:
        self.agent = agent
        self.sock = self._bind()
        self._wep = select.epoll()
        agent.add_reader(self.sock.fileno(), self._accept)
        agent.add_reader(self._wep.fileno(), self._on_writable)
        agent.sinks.append(self)          # events reach us with the other exporters' batches
        agent.control = self
        log.info("control socket listening on %s", self.path)

    def _bind(self) -> socket.socket:
        parent = os.path.dirname(self.path) or "."
        os.makedirs(parent, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket; not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.path)      # left by an agent that died
            else:
                raise RuntimeError(f"another agent is serving {self.path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)       # never visible with a wider mode, not even for a moment
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        os.chown(self.path, 0, 0)
        sock.listen(64)
        return sock

    def stop(self) -> None:
        if self.agent is not None and self in self.agent.sinks:
            self.agent.sinks.remove(self)
        for client in list(self.clients.values()):
            self._close(client)
        if self.sock is not None:
            self.agent.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        if self._wep is not None:
            self.agent.remove_reader(self._wep.fileno())
            self._wep.close()
            self._wep = None

    def close(self) -> None:       # as a sink: the agent closes sinks after stopping components
        pass

    # -- connections -------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("control socket accept failed: %s", exc)
                return
            sock.setblocking(False)
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != 0 or len(self.clients) >= self.max_clients:
                self.refused += 1
                why = "permission denied: root only" if uid != 0 else "too many clients"
                log.warning("control socket: refused pid %d uid %d: %s", pid, uid, why)
                try:
                    sock.send(protocol.error(why))
                except OSError:
                    pass
                sock.close()
                continue
            client = Client(sock)
            self.clients[client.fd] = client
            self.agent.add_reader(client.fd, lambda c=client: self._on_readable(c))

    def _close(self, client: Client) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        self.agent.remove_reader(client.fd)
        if client.want_write:
            self._wep.unregister(client.fd)
        client.sock.close()

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
        if client.filter is not None or client.closing:
            return                         # a stream takes no further requests
        client.rbuf += data
        while b"\n" in client.rbuf and client.fd in self.clients and client.filter is None:
            line, _, rest = bytes(client.rbuf).partition(b"\n")
            client.rbuf = bytearray(rest)
            self._handle(client, line)
        if len(client.rbuf) > protocol.MAX_REQUEST_BYTES:
            self._send(client, protocol.error("request too long"))
            client.closing = True
            self._flush(client)

    # -- requests ----------------------------------------------------------------------
    def _handle(self, client: Client, line: bytes) -> None:
        try:
            req = protocol.parse_request(line)
            answer = getattr(self, "_op_" + req["op"])(client, req)
        except ProtocolError as exc:
            answer = protocol.error(str(exc))
        except Exception as exc:      # a bug answering one client must not take the agent down
            log.exception("control request failed")
            answer = protocol.error(f"internal error: {exc}")
        self._send(client, answer)

    def _op_status(self, client, req) -> bytes:
        return protocol.reply(status=agent_status(self.agent, self))

    def _op_policy_list(self, client, req) -> bytes:
        return protocol.reply(policies=policy_list(self.agent, self))

    def _op_getevents(self, client, req) -> bytes:
        client.filter = parse_filter(req.get("filter"))
        return protocol.reply(stream="events")

    def _policy_dir(self):
        directory = getattr(self.agent, "policy_dir", None)
        if directory is None:
            raise ProtocolError("this agent has no policy directory configured")
        return directory

    def _op_policy_add(self, client, req) -> bytes:
        directory = self._policy_dir()
        filename, content = req.get("filename"), req.get("content")
        if not isinstance(filename, str) or not isinstance(content, str):
            raise ProtocolError("policy_add needs string fields filename and content")
        try:
            rec = directory.write(filename, content)
        except ValueError as exc:
            return protocol.error("policy rejected", errors=str(exc).split("\n"))
        if rec is None or not rec.ok:
            return protocol.error("policy rejected", errors=rec.errors if rec else ["file vanished"])
        listed = [p for p in policy_list(self.agent, self) if p["name"] in rec.names]
        return protocol.reply(file=os.path.join(directory.path, filename), policies=listed)

    def _op_policy_delete(self, client, req) -> bytes:
        name = req.get("name")
        if not isinstance(name, str):
            raise ProtocolError("policy_delete needs a string field name")
        try:
            path = self._policy_dir().remove_policy(name)
        except (KeyError, ValueError) as exc:
            return protocol.error(exc.args[0])
        return protocol.reply(file=path, deleted=name)

    # -- sending -------------------------------------------------------------------------
    def write_events(self, batch) -> None:
        for _line, meta in batch:
            if meta.enforced and meta.policy:
                self.enforcements[meta.policy] = self.enforcements.get(meta.policy, 0) + 1
        streams = [c for c in self.clients.values() if c.filter is not None]
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
            self._send(client, protocol.encode({"dropped": client.dropped, "dropped_total": client.dropped_total}))
            client.dropped = 0
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
        client.out.append(data)
        client.queued += len(data)
        self._flush(client)

    def _flush(self, client: Client) -> None:
        try:
            while client.out:
                data = client.out[0]
                n = client.sock.send(data)
                client.queued -= n
                if n < len(data):
                    client.out[0] = data[n:]
                    break
                client.out.popleft()
        except (BlockingIOError, InterruptedError):
            pass
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
            if client.fd in self.clients and client.dropped and client.queued < self.queue_bytes // 2:
                self._send(client, protocol.encode({"dropped": client.dropped,
                                                    "dropped_total": client.dropped_total}))
                client.dropped = 0

    def describe(self) -> dict:
        return {"socket": self.path, "clients": len(self.clients),
                "streams": sum(c.filter is not None for c in self.clients.values()),
                "dropped_total": self.dropped_total, "refused": self.refused}
