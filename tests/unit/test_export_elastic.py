"""Elasticsearch bulk exporter against a fake `_bulk` endpoint on 127.0.0.1.

No Elasticsearch can be installed here; the server below implements the part
of the _bulk contract the exporter relies on: NDJSON action/document pairs,
`create` with _id answered 201 (or 409 when the _id exists), {"errors":...,
"items":[...]}, and failure modes: 503 for the whole request, connection
refused (server stopped), a response lost after the documents were stored.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tetrahost.events.meta import EventMeta
from tetrahost.export.elastic import ElasticsearchSink

META = EventMeta(kind="process_exec", pid=1, binary="/bin/x", exec_id="e", ktime=0)


class FakeES:
    def __init__(self, port: int = 0):
        self.docs: dict[str, tuple[str, dict]] = {}      # _id -> (index, doc)
        self.mode = "ok"              # ok | 503 | drop-response | reject-seq
        self.requests = 0
        self.bad_path = []
        self.lock = threading.Lock()
        self._start(port)

    def _start(self, port):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests += 1
                if self.path != "/_bulk" or self.headers["Content-Type"] != "application/x-ndjson":
                    fake.bad_path.append(self.path)
                if fake.mode == "503":
                    return self._reply(503, {"error": "unavailable"})
                lines = body.decode().splitlines()
                items, errors = [], False
                with fake.lock:
                    for action, doc in zip(lines[::2], lines[1::2]):
                        meta = json.loads(action)["create"]
                        d = json.loads(doc)
                        if fake.mode == "reject-seq" and d.get("seq", 0) % 10 == 0:
                            status = 400
                        elif fake.mode == "reject-seq" and d.get("seq", 0) % 10 == 1 and meta["_id"] not in fake.seen_429:
                            fake.seen_429.add(meta["_id"])
                            status = 429
                        elif meta["_id"] in fake.docs:
                            status = 409
                        else:
                            fake.docs[meta["_id"]] = (meta["_index"], d)
                            status = 201
                        errors |= status >= 300
                        items.append({"create": {"_index": meta["_index"], "_id": meta["_id"], "status": status}})
                if fake.mode == "drop-response":
                    fake.mode = "ok"                    # stored, but the client never hears so
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._reply(200, {"took": 1, "errors": errors, "items": items})

            def _reply(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.seen_429 = set()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def restart(self):
        self._start(self.port)

    def seqs(self):
        with self.lock:
            return sorted(d["seq"] for _, d in self.docs.values())


@pytest.fixture
def es():
    server = FakeES()
    yield server
    server.stop()


def events(start, n):
    return [(json.dumps({"process_exec": {"process": {"pid": i}}, "seq": i}), META) for i in range(start, start + n)]


def wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def sink_for(es, **kw):
    kw.setdefault("flush_interval", 0.05)
    kw.setdefault("max_retry_delay", 0.2)
    return ElasticsearchSink(f"http://127.0.0.1:{es.port}", "tetragon", **kw)


def test_bulk_delivers_every_doc_once_with_daily_index(es):
    s = sink_for(es, batch_size=100)
    for i in range(0, 1000, 37):
        s.write_events(events(i, min(37, 1000 - i)))
    wait(lambda: len(es.docs) == 1000)
    s.close()
    assert es.seqs() == list(range(1000))
    day = time.strftime("%Y.%m.%d", time.gmtime())
    assert {idx for idx, _ in es.docs.values()} == {f"tetragon-{day}"}
    assert es.requests >= 10 and not es.bad_path
    assert s.stats.events == 1000 and s.stats.dropped == 0 and s.stats.errors == 0 and s.stats.bytes > 0


def test_fixed_index_name(es):
    s = sink_for(es, daily_index=False)
    s.write_events(events(0, 3))
    wait(lambda: len(es.docs) == 3)
    s.close()
    assert {idx for idx, _ in es.docs.values()} == {"tetragon"}


def test_503_then_recovery_nothing_blocks_nothing_duplicated(es):
    es.mode = "503"
    s = sink_for(es, batch_size=50)
    t0 = time.monotonic()
    for i in range(0, 500, 50):
        s.write_events(events(i, 50))
    assert time.monotonic() - t0 < 0.1              # the caller never waits for the cluster
    wait(lambda: s.stats.errors >= 3)               # retried with backoff while down
    assert not es.docs
    es.mode = "ok"
    wait(lambda: len(es.docs) == 500)
    s.close()
    assert es.seqs() == list(range(500)) and s.stats.events == 500 and s.retries >= 3


def test_cluster_down_buffer_overflow_counted_then_resumes(es):
    es.stop()                                       # connection refused
    s = sink_for(es, batch_size=20, buffer_size=100)
    t0 = time.monotonic()
    for i in range(0, 300, 10):
        s.write_events(events(i, 10))
    assert time.monotonic() - t0 < 0.1
    wait(lambda: s.stats.errors >= 2)
    dropped = s.stats.dropped
    # 100 buffered + at most one batch the worker took before the overflow
    assert 300 - 100 - 20 <= dropped <= 300 - 100
    es.restart()
    wait(lambda: len(es.docs) == 300 - dropped)
    s.write_events(events(1000, 5))                 # and new events flow again
    wait(lambda: len(es.docs) == 305 - dropped)
    s.close()
    assert len(set(es.seqs())) == len(es.docs)      # each accepted doc exactly once
    assert s.stats.events == 305 - dropped and s.stats.events + s.stats.dropped == 305


def test_lost_response_is_not_a_duplicate(es):
    es.mode = "drop-response"
    s = sink_for(es, batch_size=10)
    s.write_events(events(0, 10))
    wait(lambda: s.stats.events == 10)
    s.close()
    assert es.seqs() == list(range(10)) and es.requests >= 2   # resent, answered 409, counted once


def test_item_errors_retry_429_drop_400(es):
    es.mode = "reject-seq"
    s = sink_for(es, batch_size=100)
    s.write_events(events(0, 100))
    wait(lambda: s.stats.events + s.stats.dropped == 100)
    s.close()
    assert s.stats.dropped == 10                     # seq % 10 == 0 rejected for good
    assert es.seqs() == [i for i in range(100) if i % 10]   # 429s were retried and stored


def test_close_drains_the_buffer(es):
    s = sink_for(es, batch_size=1000, flush_interval=5.0)
    s.write_events(events(0, 10))
    s.close()                                        # does not wait out flush_interval
    assert es.seqs() == list(range(10))


def test_close_with_cluster_down_counts_the_rest(es):
    es.stop()
    s = sink_for(es, drain_timeout=0.5)
    s.write_events(events(0, 10))
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 5
    assert s.stats.dropped == 10 and s.stats.events == 0
    es.restart()


def test_auth_headers():
    s = ElasticsearchSink("http://127.0.0.1:9/", username="u", password="p")
    assert s.headers["Authorization"] == "Basic dTpw"
    s.close()
    s = ElasticsearchSink("https://h", api_key="k")
    assert s.headers["Authorization"] == "ApiKey k" and s._port == 443
    s.close()
    with pytest.raises(ValueError):
        ElasticsearchSink("ftp://h")
