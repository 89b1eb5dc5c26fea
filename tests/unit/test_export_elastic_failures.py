"""Elasticsearch exporter against a loopback `_bulk` server that misbehaves.

The server (no Elasticsearch can be installed here) stores `create` actions by
_id like a cluster and can, per request: answer 429/503 with or without
Retry-After, close the connection halfway through reading a batch, hang,
answer 200 with per-item mapping errors as Elasticsearch words them, require
basic or API-key authentication, and speak TLS with a certificate from a CA
generated for the test (openssl).
"""
from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tetrahost.events.meta import EventMeta
from tetrahost.export.elastic import ElasticsearchSink, retry_after

META = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)


class Bulk:
    """A `_bulk` endpoint; `script` maps a request number (1-based) to a misbehaviour."""

    def __init__(self, tls=None, auth=None, port=0):
        self.docs: dict[str, tuple[str, dict]] = {}
        self.times: list[float] = []          # arrival of each request
        self.script: dict[int, tuple] = {}
        self.auth = auth
        self.release = threading.Event()      # lets a hanging request go
        self.lock = threading.Lock()
        bulk = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                with bulk.lock:
                    bulk.times.append(time.monotonic())
                    n = len(bulk.times)
                what = bulk.script.get(n, ("ok",))
                length = int(self.headers["Content-Length"])
                if what[0] == "close-mid-body":          # goes away while the batch arrives
                    self.rfile.read(length // 2)
                    self.close_connection = True
                    self.connection.close()
                    return
                body = self.rfile.read(length)
                if bulk.auth and self.headers.get("Authorization") != bulk.auth:
                    return self.reply(401, {"error": {"type": "security_exception"}, "status": 401})
                if what[0] == "hang":
                    bulk.release.wait(30)
                    self.close_connection = True
                    return
                if what[0] == "status":                    # ("status", 429, {"Retry-After": "1"})
                    return self.reply(what[1], {"error": "busy", "status": what[1]}, what[2])
                lines = body.decode().splitlines()
                items = []
                for action, doc in zip(lines[::2], lines[1::2]):
                    meta, d = json.loads(action)["create"], json.loads(doc)
                    with bulk.lock:
                        if "bad" in d:
                            items.append({"create": {"_index": meta["_index"], "_id": meta["_id"], "status": 400,
                                                     "error": {"type": d["bad"], "reason": "failed to parse field"}}})
                            continue
                        status = 409 if meta["_id"] in bulk.docs else 201
                        bulk.docs.setdefault(meta["_id"], (meta["_index"], d))
                    items.append({"create": {"_index": meta["_index"], "_id": meta["_id"], "status": status}})
                self.reply(200, {"took": 1, "errors": any(i["create"]["status"] >= 300 for i in items),
                                 "items": items})

            def reply(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seqs(self):
        with self.lock:
            return sorted(d["seq"] for _, d in self.docs.values())

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bulk():
    b = Bulk()
    yield b
    b.stop()


def events(start, n, **extra):
    return [(json.dumps({"process_exec": {"process": {"pid": i}}, "seq": i, **extra}), META)
            for i in range(start, start + n)]


def wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def sink(port, scheme="http", index="tetragon", **kw):
    kw.setdefault("flush_interval", 0.05)
    kw.setdefault("max_retry_delay", 5.0)
    return ElasticsearchSink(f"{scheme}://127.0.0.1:{port}", index, **kw)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(bulk, status):
    bulk.script = {1: ("status", status, {"Retry-After": "1"})}
    s = sink(bulk.port)
    s.write_events(events(0, 20))
    wait(lambda: len(bulk.docs) == 20)
    s.close()
    gap = bulk.times[1] - bulk.times[0]
    assert 0.9 <= gap < 3, gap                      # the server's second, not the 0.5 s backoff
    assert bulk.seqs() == list(range(20)) and s.stats.errors == 1 and s.stats.dropped == 0


@pytest.mark.parametrize("status", [429, 503])
def test_without_retry_after_backoff_doubles(bulk, status):
    bulk.script = {1: ("status", status, {}), 2: ("status", status, {}), 3: ("status", status, {})}
    s = sink(bulk.port)
    s.write_events(events(0, 20))
    wait(lambda: len(bulk.docs) == 20)
    s.close()
    gaps = [b - a for a, b in zip(bulk.times, bulk.times[1:])]
    assert 0.4 < gaps[0] < 0.9 and 0.9 < gaps[1] < 1.6 and 1.8 < gaps[2] < 3.0, gaps
    assert bulk.seqs() == list(range(20)) and s.stats.errors == 3


def test_retry_after_capped_by_max_retry_delay(bulk):
    bulk.script = {1: ("status", 429, {"Retry-After": "3600"})}
    s = sink(bulk.port, max_retry_delay=0.3)
    s.write_events(events(0, 5))
    wait(lambda: len(bulk.docs) == 5)
    s.close()
    assert bulk.times[1] - bulk.times[0] < 1.0


def test_retry_after_parsing():
    assert retry_after("2") == 2.0 and retry_after(None) is None and retry_after("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 28 <= retry_after(later) <= 31


def test_server_goes_away_mid_batch(bulk):
    bulk.script = {1: ("close-mid-body",), 2: ("close-mid-body",)}
    s = sink(bulk.port, batch_size=500, max_retry_delay=0.2)
    s.write_events(events(0, 500))                  # one large request, cut twice while it arrives
    wait(lambda: len(bulk.docs) == 500)
    s.close()
    assert bulk.seqs() == list(range(500)) and len(bulk.times) == 3
    assert s.stats.errors == 2 and s.stats.dropped == 0 and s.stats.events == 500


def test_hanging_server_times_out_and_resends_without_duplicates(bulk):
    bulk.script = {1: ("hang",)}
    s = sink(bulk.port, timeout=0.5, max_retry_delay=0.2)
    t0 = time.monotonic()
    s.write_events(events(0, 50))
    assert time.monotonic() - t0 < 0.1              # the caller never waits on the cluster
    wait(lambda: len(bulk.docs) == 50)
    s.close()
    assert bulk.seqs() == list(range(50)) and s.stats.errors == 1 and s.stats.dropped == 0


def test_mapping_conflicts_inside_a_200_are_counted_lost(bulk):
    s = sink(bulk.port, batch_size=100)
    batch = events(0, 6) + events(6, 2, bad="mapper_parsing_exception") + \
        events(8, 1, bad="document_parsing_exception") + events(9, 1, bad="version_conflict_engine_exception")
    s.write_events(batch)
    wait(lambda: s.stats.events + s.stats.dropped == 10)
    s.close()
    assert bulk.seqs() == list(range(6))
    assert s.stats.lost_by_reason == {"mapping_conflict": 3, "rejected": 1}
    assert len(bulk.times) == 1                     # rejected documents are not resent


def test_memory_bounded_while_hanging_then_resumes(bulk):
    bulk.script = {1: ("hang",)}
    s = sink(bulk.port, batch_size=100, buffer_size=1000, timeout=30)
    s.write_events(events(0, 100))
    wait(lambda: len(bulk.times) == 1)              # that batch is in flight, hanging
    for i in range(100, 5000, 100):
        s.write_events(events(i, 100))
        assert s.pending() <= 1000                  # plus the one batch in flight
    lost = s.stats.lost_by_reason["buffer_full"]
    assert lost == 5000 - 1000 - 100
    bulk.release.set()                              # the hung request ends (connection closed)
    wait(lambda: len(bulk.docs) == 1100)
    s.write_events(events(9000, 10))
    wait(lambda: len(bulk.docs) == 1110)
    s.close()
    assert len(set(bulk.seqs())) == 1110 and s.stats.events == 1110
    assert s.stats.events + s.stats.dropped == 5010


def test_down_at_start_then_up():
    b = Bulk()
    port = b.port
    b.stop()                                        # nothing listens on the port: refused
    s = sink(port, max_retry_delay=0.2)
    s.write_events(events(0, 30))
    wait(lambda: s.stats.errors >= 2)
    assert s.stats.events == 0 and s.stats.dropped == 0      # waiting, not lost
    up = Bulk(port=port)                            # the cluster comes up
    try:
        wait(lambda: len(up.docs) == 30)
        s.close()
        assert up.seqs() == list(range(30)) and s.stats.dropped == 0 and s.stats.events == 30
    finally:
        up.stop()


@pytest.mark.parametrize("how", ["basic", "api_key"])
def test_authentication(how):
    header = "Basic dXNlcjpzM2NyZXQ=" if how == "basic" else "ApiKey aWQ6a2V5"
    b = Bulk(auth=header)
    try:
        creds = {"username": "user", "password": "s3cret"} if how == "basic" else {"api_key": "aWQ6a2V5"}
        good = sink(b.port, **creds)
        good.write_events(events(0, 5))
        wait(lambda: len(b.docs) == 5)
        good.close()
        bad = sink(b.port, username="user", password="wrong")
        bad.write_events(events(5, 5))
        wait(lambda: bad.stats.dropped == 5)
        bad.close()
        assert bad.stats.lost_by_reason == {"unauthorized": 5} and b.seqs() == list(range(5))
    finally:
        b.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=tetrahost test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


def test_tls_with_ca_file(pki):
    b = Bulk(tls=(str(pki / "server.pem"), str(pki / "server.key")))
    try:
        s = sink(b.port, scheme="https", ca_file=str(pki / "ca.pem"))
        s.write_events(events(0, 10))
        wait(lambda: len(b.docs) == 10)
        s.close()
        assert s.stats.errors == 0
        # Without the CA the certificate is not trusted: nothing is sent, the batch waits.
        untrusted = sink(b.port, scheme="https", max_retry_delay=0.2, drain_timeout=0.3)
        untrusted.write_events(events(10, 10))
        wait(lambda: untrusted.stats.errors >= 2)
        untrusted.close()
        assert len(b.docs) == 10 and untrusted.stats.lost_by_reason == {"shutdown": 10}
    finally:
        b.stop()


def test_data_stream_documents(bulk):
    s = sink(bulk.port, index="logs-tetragon.events-default", daily_index=True, data_stream=True)
    s.write_events(events(0, 3) + [("{}", META)])
    wait(lambda: len(bulk.docs) == 4)
    s.close()
    assert {idx for idx, _ in bulk.docs.values()} == {"logs-tetragon.events-default"}
    stamps = [d["@timestamp"] for _, d in bulk.docs.values()]
    assert all(len(t) == 24 and t.endswith("Z") and t[10] == "T" for t in stamps), stamps
    assert sorted(d.get("seq", -1) for _, d in bulk.docs.values()) == [-1, 0, 1, 2]


def test_shipped_index_template_declares_the_data_stream():
    """The template an operator PUTs to _index_template/tetrahost matches the documented
    data stream name and maps what the exporter adds (@timestamp) as a date."""
    import pathlib
    import re
    repo = pathlib.Path(__file__).resolve().parents[2]
    t = json.loads((repo / "packaging" / "elasticsearch" / "tetrahost-index-template.json").read_text())
    assert t["data_stream"] == {} and t["priority"] > 100      # above Elasticsearch's built-in logs-*-*
    pattern = re.compile("^" + ".*".join(map(re.escape, t["index_patterns"][0].split("*"))) + "$")
    documented = re.findall(r"logs-tetragon\.events-\w+", (repo / "docs" / "outputs.md").read_text())
    assert documented and all(pattern.match(name) for name in documented)
    assert t["template"]["mappings"]["properties"]["@timestamp"] == {"type": "date"}
