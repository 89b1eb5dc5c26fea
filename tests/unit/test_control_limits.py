"""Control-socket limits: eviction order, unread replies, partial frames, big frames, stream queues."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from control_fakes import connect, make_server, read_lines
from tetrahost.control import protocol, server as server_mod
from tetrahost.events.meta import EventMeta


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(server_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def status_request() -> bytes:
    return protocol.request("status")


def test_status_answers(clock):
    server, agent = make_server()
    peer, _ = connect(server)
    peer.sendall(status_request())
    agent.pump()
    (line,), closed = read_lines(peer)
    assert json.loads(line)["status"]["control"]["clients"] == 1 and not closed


def test_pipelined_requests_from_a_client_that_never_reads_queue_one_reply_then_disconnect(clock):
    server, agent = make_server()
    peer, client = connect(server, rcvbuf=4096)
    peer.setblocking(False)
    sent = 0
    try:
        while sent < 20000:
            sent += peer.send(status_request() * 100)
            agent.pump()
    except BlockingIOError:
        pass                                  # the server stopped reading: the sender is held back
    agent.pump()
    assert sent > 0 and not client.reading
    one_reply = len(protocol.reply(status={})) + 2000
    assert client.queued < one_reply, client.queued
    assert len(client.pending) < 64 * 1024 // len(status_request()) + 1
    clock[0] += server_mod.WRITE_TIMEOUT + 1
    server._sweep()
    assert client.fd not in server.clients and server.timed_out == 1


def test_replies_resume_once_the_client_reads(clock):
    server, agent = make_server()
    peer, client = connect(server, rcvbuf=4096)
    peer.sendall(status_request() * 50)
    agent.pump()
    got = []
    for _ in range(500):
        lines, closed = read_lines(peer)
        got += lines
        agent.pump()
        if len(got) == 50:
            break
    assert len(got) == 50 and all(json.loads(l)["ok"] for l in got)
    assert client.reading and not client.out


def test_idle_clients_are_evicted_first_and_told_why(clock):
    server, agent = make_server(max_clients=4)
    stream, sc = connect(server)
    stream.sendall(protocol.request("getevents", filter={}))
    agent.pump()
    idle = []
    for _ in range(2):
        clock[0] += 1
        idle.append(connect(server))
    clock[0] += 1
    partial, pc = connect(server)
    partial.sendall(b'{"version":1,')
    agent.pump()
    assert len(server.clients) == 4
    clock[0] += 1
    newest, _ = connect(server)              # full: the oldest idle client makes room
    lines, closed = read_lines(idle[0][0])
    assert closed and json.loads(lines[-1])["code"] == protocol.EVICTED
    live = list(server.clients.values())
    assert idle[1][1] in live and sc in live and pc in live and idle[0][1] not in live
    newest.sendall(status_request())
    agent.pump()
    assert json.loads(read_lines(newest)[0][0])["ok"] is True
    clock[0] += 1
    connect(server)                          # next: the other idle one (the oldest)
    live = list(server.clients.values())
    assert idle[1][1] not in live and pc in live and sc in live and server.evicted == 2


def test_eviction_order_idle_partial_unread_lagging_stream_stream(clock):
    server, agent = make_server()
    kinds = {}
    for name in ("stream", "lagging", "unread", "partial", "idle"):   # oldest first: order must not matter
        clock[0] += 1
        kinds[name] = connect(server, rcvbuf=4096)
    for name in ("stream", "lagging"):
        kinds[name][0].sendall(protocol.request("getevents"))
    kinds["partial"][0].sendall(b'{"vers')
    kinds["unread"][0].sendall(status_request() * 20)
    agent.pump()
    server.write_events(_events(2000))
    kinds["stream"][1].out.clear()
    kinds["stream"][1].dropped = 0
    ranked = sorted(server.clients.values(), key=lambda c: c.rank())
    assert [c for c in ranked] == [kinds[n][1] for n in ("idle", "partial", "unread", "lagging", "stream")]


def test_a_partial_frame_times_out(clock):
    server, agent = make_server()
    peer, client = connect(server)
    peer.sendall(b'{"version":1,"op":"sta')
    agent.pump()
    clock[0] += server_mod.FRAME_TIMEOUT - 1
    server._sweep()
    assert client.fd in server.clients
    clock[0] += 2
    server._sweep()
    lines, closed = read_lines(peer)
    assert closed and json.loads(lines[0])["code"] == protocol.FRAME_TIMEOUT


def test_an_idle_client_times_out_a_stream_does_not(clock):
    server, agent = make_server()
    peer, client = connect(server)
    stream, sc = connect(server)
    stream.sendall(protocol.request("getevents"))
    agent.pump()
    clock[0] += server_mod.IDLE_TIMEOUT + 1
    server._sweep()
    assert client.fd not in server.clients and sc.fd in server.clients
    assert json.loads(read_lines(peer)[0][0])["code"] == protocol.IDLE_TIMEOUT


def test_a_too_large_frame_gets_a_structured_error_then_a_close(clock):
    server, agent = make_server()
    peer, client = connect(server)
    chunk = b'{"version":1,"op":"policy_add","content":"' + b"x" * 65536
    for _ in range(protocol.MAX_FRAME // len(chunk) + 1):
        if client.fd not in server.clients:
            break
        server.feed(client, chunk)
    lines, closed = read_lines(peer)
    err = json.loads(lines[0])
    assert closed and err["ok"] is False and err["code"] == protocol.FRAME_TOO_LARGE
    assert err["limit"] == protocol.MAX_FRAME and server.too_large == 1


def _events(n: int, size: int = 500):
    meta = EventMeta(kind="process_exec", pid=1, binary="/bin/true", exec_id="", ktime=0)
    return [('{"process_exec":{"x":"' + "a" * size + '"}}', meta)] * n


def test_a_stream_that_does_not_read_loses_events_counted_and_is_told(clock):
    server, agent = make_server(queue_bytes=64 * 1024)
    peer, client = connect(server, rcvbuf=4096)
    peer.sendall(protocol.request("getevents", filter={}))
    agent.pump()
    for _ in range(100):
        server.write_events(_events(100))
    assert client.queued <= 64 * 1024 and client.dropped_total > 9000
    assert server.describe()["dropped_total"] == client.dropped_total
    data = b""
    for _ in range(1000):                    # read everything; the notice follows the backlog
        lines, _ = read_lines(peer)
        data += b"\n".join(lines) + b"\n"
        agent.pump()
        if b'"dropped"' in data:
            break
    notice = [json.loads(l) for l in data.split(b"\n") if l.startswith(b'{"dropped"')]
    assert notice and notice[0]["dropped_total"] == client.dropped_total
