"""DnsLookup / GetUrl in user space: a loopback HTTP server and names this
host resolves without a network (localhost); the rate limit, the bounded
queue, failures and timeouts counted, the worker surviving them all; the
front end accepting the actions with their arguments (and refusing bad ones)."""
from __future__ import annotations

import http.server
import threading
import time

import pytest

from policytest_helpers import errors_of, policy_text
from tetrahost.policy import load_text
from tetrahost.useractions import UserActions


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.paths.append(self.path)
        if self.path == "/slow":
            time.sleep(1.5)
        self.send_response(404 if self.path == "/missing" else 200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.paths = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def worker():
    w = UserActions(min_interval=60, timeout=0.5)
    yield w
    w.close()


def test_geturl_fetches_once_per_interval_and_counts_the_repeats(server, worker):
    url = f"http://127.0.0.1:{server.server_port}/canary"
    for _ in range(3):
        worker.submit("GetUrl", url)
    assert worker.wait_idle(10)
    assert server.paths == ["/canary"]
    assert (worker.counts[("GetUrl", "done")], worker.counts[("GetUrl", "rate_limited")]) == (1, 2)


def test_an_http_error_status_still_reached_the_server(server, worker):
    worker.submit("GetUrl", f"http://127.0.0.1:{server.server_port}/missing")
    assert worker.wait_idle(10) and server.paths == ["/missing"]
    assert worker.counts[("GetUrl", "done")] == 1


def test_refused_and_slow_servers_are_counted_and_the_worker_goes_on(server, worker):
    closed = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    port = closed.server_port
    closed.server_close()                       # nothing listens there now
    worker.submit("GetUrl", f"http://127.0.0.1:{port}/x")
    worker.submit("GetUrl", f"http://127.0.0.1:{server.server_port}/slow")
    worker.submit("DnsLookup", "localhost")
    assert worker.wait_idle(10)
    assert worker.counts[("GetUrl", "failed")] == 1 and worker.counts[("GetUrl", "timeout")] == 1
    assert worker.counts[("DnsLookup", "done")] == 1


def test_a_name_that_does_not_resolve_fails(worker):
    worker.submit("DnsLookup", "no-such-host.invalid")
    assert worker.wait_idle(10)
    assert worker.counts[("DnsLookup", "failed")] + worker.counts[("DnsLookup", "timeout")] == 1


def test_a_full_queue_drops_and_counts_without_blocking(server):
    w = UserActions(min_interval=0, timeout=2, queue_size=2)
    try:
        slow = f"http://127.0.0.1:{server.server_port}/slow"
        start = time.monotonic()
        for _ in range(10):
            w.submit("GetUrl", slow)
        assert time.monotonic() - start < 0.5          # the event loop never waits
        assert w.counts[("GetUrl", "queue_full")] >= 7
    finally:
        w.close()


def test_validated_with_their_arguments():
    text = policy_text("""
        kprobes:
        - call: fd_install
          selectors:
          - matchActions:
            - {action: DnsLookup, argFqdn: canary.example.org}
            - {action: GetUrl, argUrl: "http://127.0.0.1:8080/canary?x=1"}
        """)
    result = load_text(text, file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    actions = result.policies[0].hooks[0].selectors[0].match_actions
    assert [(a.action, a.arg_fqdn, a.arg_url) for a in actions] == [
        ("DnsLookup", "canary.example.org", ""), ("GetUrl", "", "http://127.0.0.1:8080/canary?x=1")]


@pytest.mark.parametrize("action, expected", [
    ("{action: DnsLookup}", "p.yaml:10: spec.kprobes[0].selectors[0].matchActions[0].argFqdn: required field is missing"),
    ("{action: DnsLookup, argFqdn: 'a b'}",
     'p.yaml:10: spec.kprobes[0].selectors[0].matchActions[0].argFqdn: "a b" is not a host name'),
    ("{action: GetUrl, argUrl: 'file:///etc/passwd'}",
     'p.yaml:10: spec.kprobes[0].selectors[0].matchActions[0].argUrl: "file:///etc/passwd" is not an http:// '
     "or https:// URL"),
])
def test_refused_with_file_line_and_field(action, expected):
    assert errors_of(f"""
        kprobes:
        - call: fd_install
          selectors:
          - matchActions:
            - {action}
        """) == [expected]


def test_nopost_would_suppress_them():
    assert errors_of("""
        kprobes:
        - call: fd_install
          selectors:
          - matchActions:
            - {action: GetUrl, argUrl: "http://127.0.0.1/x"}
            - {action: NoPost}
        """) == ["p.yaml:9: spec.kprobes[0].selectors[0].matchActions: GetUrl is done by the agent on the "
                 "posted event: NoPost would suppress it"]
