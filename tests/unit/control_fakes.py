"""A ControlServer wired to a fake agent and real socketpairs, driven without a kernel.

The fake agent is the server's loop (pump() calls the callbacks of readable
fds as EventLoop.run does) and gives it a real StatusBoard over fake state.
"""
from __future__ import annotations

import select
import socket
from types import SimpleNamespace

from tetrahost.control.policy_ops import PolicyOperations
from tetrahost.control.server import ControlServer
from tetrahost.daemon import Counters
from tetrahost.runtime.policy_files import PolicyRejected
from tetrahost.runtime.services import Exporters
from tetrahost.runtime.snapshot import SnapshotInputs, StatusBoard


class FakePolicyDir:
    path = "/etc/tetrahost/policies.d"
    files: dict = {}

    def write(self, filename, content):
        if not filename.endswith((".yaml", ".yml")) or "/" in filename:
            raise PolicyRejected([PolicyRejected.problem(filename, "not a policy file name")])
        raise PolicyRejected([PolicyRejected.problem(filename, "not a TracingPolicy", 1, "spec",
                                                     f"{filename}:1: spec: not a TracingPolicy")])

    def remove_policy(self, name):
        raise KeyError(f'no policy named "{name}" is loaded')

    def describe(self):
        return {"path": self.path, "watching": True, "files": []}


class FakeAgent:
    def __init__(self):
        self.readers: dict[int, object] = {}
        self.timers: list = []
        self.sinks: list = []
        self.policies = None
        self.policy_dir = FakePolicyDir()
        self.counters = Counters(records=5, events={"process_exec": 2})
        self.node_name = "test-node"
        self.features = None
        self.sensor = SimpleNamespace(obj=SimpleNamespace(programs={}))
        self.cache = []

    def status_board(self) -> StatusBoard:
        return StatusBoard(SnapshotInputs(
            node_name=self.node_name, counters=self.counters, cache=self.cache, features=lambda: self.features,
            in_use=lambda: ["process sensor: "], policies=lambda: self.policies, pins=lambda: None,
            delivery=lambda: None, costs=lambda: [],
            sections={"policy_dir": self.policy_dir.describe}))

    def add_reader(self, fd, callback):
        self.readers[fd] = callback

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def add_timer(self, interval, callback):
        self.timers.append(callback)

    def pump(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            fds = list(self.readers)
            ready, _, _ = select.select(fds, [], [], 0) if fds else ([], [], [])
            if not ready:
                return
            for fd in ready:
                cb = self.readers.get(fd)
                if cb is not None:
                    cb()


def make_server(**kw) -> tuple[ControlServer, FakeAgent]:
    """A server serving no listening socket: clients are adopted from socketpairs."""
    agent = FakeAgent()
    kw.setdefault("policy_files", agent.policy_dir)      # the fake's add/delete refuse everything
    server = ControlServer("/nonexistent/test.sock", **kw)
    server.loop, server.status, server.exporters = agent, agent.status_board(), Exporters(agent.sinks)
    server.status.add_section("control", server.describe)
    server.policy_ops = PolicyOperations(server.policy_files, None, server.status, server.enforcements)
    server._wep = select.epoll()
    agent.add_reader(server._wep.fileno(), server._on_writable)
    return server, agent


def connect(server: ControlServer, rcvbuf: int | None = None) -> tuple[socket.socket, object]:
    """(the client's end, the server's Client) of a new connection."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if rcvbuf:     # on AF_UNIX the sender's buffer is what fills: shrink both ends
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    theirs.setblocking(False)
    return ours, server.adopt(theirs)


def read_lines(sock: socket.socket, timeout: float = 0.0) -> tuple[list[bytes], bool]:
    """Complete lines waiting on sock, and whether the server closed it."""
    sock.setblocking(False)
    data, closed = b"", False
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return [l for l in data.split(b"\n") if l], closed
