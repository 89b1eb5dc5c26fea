"""The bounded /metrics HTTP server: slow and oversized clients cost a slot, never the scrape."""
from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from tetrahost import metrics_http
from tetrahost.metrics_http import BoundedHTTPServer


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(metrics_http, "CONNECTION_TIMEOUT", 1.0)
    srv = BoundedHTTPServer("127.0.0.1", 0, lambda m, t, a: ("200 OK", "text/plain", b"up 1\n" * 2000),
                            max_connections=4)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    t.join(5)


def scrape(srv) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5) as r:
        return r.read()


def open_fds() -> int:
    import os
    return len(os.listdir("/proc/self/fd"))


def test_many_slow_connections_do_not_block_a_scrape_or_take_fds(server):
    before = open_fds()
    slow = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")          # never finished
        slow.append(s)
    t0 = time.monotonic()
    assert scrape(server) == b"up 1\n" * 2000
    assert time.monotonic() - t0 < 1.0
    # the server holds at most max_connections of them (the 200 sockets here are the client's)
    assert open_fds() - before - len(slow) <= 4 + 2
    assert server.stats["evicted"] >= 190
    for s in slow:
        s.close()


def test_a_connection_has_a_total_time_limit(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    s.settimeout(5)
    t0 = time.monotonic()
    assert s.recv(100) == b""                    # closed by the server, no reply
    assert 0.9 < time.monotonic() - t0 < 3.0 and server.stats["timed_out"] == 1


def test_an_oversized_request_head_is_refused(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (metrics_http.MAX_REQUEST_BYTES + 10))
    s.settimeout(5)
    assert s.recv(100).startswith(b"HTTP/1.1 431 ")
    assert server.stats["too_large"] == 1


def test_garbage_is_a_bad_request(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"hello\r\n\r\n")
    s.settimeout(5)
    assert s.recv(100).startswith(b"HTTP/1.1 400 ")
