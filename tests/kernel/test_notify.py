"""sd_notify: READY=1, STATUS=, WATCHDOG=1, STOPPING=1 on a fake NOTIFY_SOCKET (a datagram socket in tmp)."""
from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest

from agent_harness import RunningAgent
from tetrahost.daemon import Counters
from tetrahost.notify import Notifier, summary, watchdog_interval
from tetrahost.runtime.snapshot import SnapshotInputs, StatusBoard

pytestmark = pytest.mark.kernel


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield s
    s.close()


def receive(sock, until, timeout=10.0) -> list[str]:
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        if until(got):
            break
    return got


class FakeAgent:
    """The services a Notifier uses: a loop that records timers, a status board over fake counters."""

    def __init__(self):
        self.counters = Counters(events={"process_exec": 5, "process_exit": 4}, lost={"exec": 2})
        self.timers = []
        self.loop = self
        self.status = StatusBoard(SnapshotInputs(
            node_name="n", counters=self.counters, cache=[], features=lambda: None, in_use=lambda: [],
            policies=lambda: None, pins=lambda: None, delivery=lambda: None, costs=lambda: []))

    def add_timer(self, interval, cb):
        self.timers.append((interval, cb))


def test_component_messages(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    agent = FakeAgent()
    n = Notifier(status_interval=7)
    n.start(agent)
    assert n.active
    first = notify_socket.recv(4096).decode()
    assert first.startswith("READY=1\nSTATUS=9 events (exec 5, exit 4); 0 policies; 2 lost")
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert sorted(i for i, _ in agent.timers) == [2.0, 7]      # watchdog at half of WATCHDOG_USEC
    for _, cb in agent.timers:
        cb()
    got = {notify_socket.recv(4096).decode()[:9] for _ in agent.timers}
    assert got == {"STATUS=9 ", "WATCHDOG="}
    n.stop()
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_inactive_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    agent = FakeAgent()
    n = Notifier()
    n.start(agent)
    assert not n.active and not agent.timers
    n.stop()


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")         # for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() == 1.5


def test_summary_with_policies():
    snap = SimpleNamespace(events={}, lost={}, policies=[SimpleNamespace(state=s)
                                                         for s in ("enforcing", "enforcing", "error")])
    assert summary(snap) == "0 events; 3 policies (2 enforcing, 1 error); 0 lost"


@pytest.mark.needs_root
def test_real_agent_notifies(notify_socket, monkeypatch, tmp_path):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")       # pings every 0.5 s
    agent = RunningAgent(tmp_path, "--metrics-address", "off", "--no-journald")
    try:
        got = receive(notify_socket, lambda g: sum(m == "WATCHDOG=1" for m in g) >= 3)
        assert got[0].startswith("READY=1\nSTATUS=") and "events" in got[0]
        assert sum(m == "WATCHDOG=1" for m in got) >= 3    # from the loop's timer, not just once
        # READY=1 only after the agent is up: its "ready" log line is already written
        assert "tetrahost ready" in agent.log_text()
    finally:
        assert agent.stop() == 0, agent.log_text()
    rest = receive(notify_socket, lambda g: any(m.startswith("STOPPING=1") for m in g), timeout=3)
    assert any(m.startswith("STOPPING=1") for m in rest)
