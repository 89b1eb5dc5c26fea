"""Events to Elasticsearch / OpenSearch through the `_bulk` API.

Why stdlib http.client and not the official `elasticsearch` client: the bulk
request is a few lines of NDJSON (an action line and a document line per
event) POSTed to /_bulk, and the response tells per item whether it was
stored.  The client would add a dependency tree (elastic-transport, urllib3,
certifi) that Debian packages separately and that pins cluster major versions,
and it is synchronous too, so it would need the same thread and queue anyway.
http.client speaks to Elasticsearch 7/8 and OpenSearch alike.

Off the hot path: write_events() appends to a bounded deque (buffer_size
events) and returns.  A worker thread takes up to batch_size events at a time
(or whatever is there after flush_interval) and sends them.  When the cluster
is down (connection refused or reset, timeout, 429, 5xx) the worker keeps the
batch and retries with exponential backoff (0.5 s doubling up to
max_retry_delay), or after the server's Retry-After (capped the same way);
the loop never waits, new events fill the buffer, and once it is full further
events are dropped and counted (stats.lose(n, "buffer_full"), metrics, a
rate-limited log line).  When the cluster returns the batch is resent and the
backlog drains.  Memory is bounded by buffer_size events plus one batch.

Delivery guarantee: within one run of the agent, each event is stored once
or counted lost (tetrahost_export_lost_total{reason}).  Each document gets an
_id (a per-run random prefix plus a sequence number) and is sent with the
`create` action, so a batch the cluster stored but whose response was lost
is answered with 409 on the resend and counted as delivered, not stored
twice.  Where the cluster cannot see the earlier copy, delivery is
at-least-once: in a data stream that rolled over to a new backing index
between the lost response and the resend, the resend is stored again.  Events
still buffered when the agent stops are counted lost ("shutdown"), never
replayed by the next run.  Documents rejected for good are dropped and
counted: "mapping_conflict" (the document does not fit the index's mapping),
"rejected" (any other per-item 4xx, or a whole request answered 400/404),
"unauthorized" (401/403: wrong credentials are not fixed by resending).

data_stream=True: `index` names a data stream (Elastic's integrations'
`logs-<dataset>-<namespace>`, e.g. logs-tetragon.events-default; the index
template packaging/elasticsearch ships declares it), no daily suffix, and each
document gets the `@timestamp` a data stream requires: when the agent queued
the event (the event's own `time` stays in the document).
"""
from __future__ import annotations

import base64
import collections
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse

from tetrahost.export.sinks import LogThrottle, SinkStats

log = logging.getLogger(__name__)

RETRYABLE = {429, 500, 502, 503, 504}
# Per-item error types meaning "this document does not fit the mapping".
MAPPING_ERRORS = {"mapper_parsing_exception", "document_parsing_exception",
                  "strict_dynamic_mapping_exception", "illegal_argument_exception"}


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class ElasticsearchSink:
    name = "elasticsearch"

    def __init__(self, url: str, index: str = "tetragon", *, daily_index: bool = True,
                 batch_size: int = 500, flush_interval: float = 1.0, buffer_size: int = 10000,
                 timeout: float = 10.0, max_retry_delay: float = 30.0, username: str = "",
                 password: str = "", api_key: str = "", ca_file: str = "", verify_tls: bool = True,
                 drain_timeout: float = 5.0, data_stream: bool = False):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"elasticsearch url must be http(s)://host[:port], got {url!r}")
        self.url = url
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname, u.port or (443 if self._https else 9200)
        self._path = (u.path.rstrip("/") or "") + "/_bulk"
        self.index = index
        self.data_stream = data_stream
        self.daily_index = daily_index and not data_stream
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.buffer_size = buffer_size
        self.timeout = timeout
        self.max_retry_delay = max_retry_delay
        self.drain_timeout = drain_timeout
        self.stats = SinkStats()
        self.retries = 0
        self.headers = {"Content-Type": "application/x-ndjson"}
        if api_key:
            self.headers["Authorization"] = f"ApiKey {api_key}"
        elif username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self._ssl = None
        if self._https:
            self._ssl = ssl.create_default_context(cafile=ca_file or None)
            if not verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._run_id = os.urandom(6).hex()
        self._seq = 0
        self._buf: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._conn = None
        self._retry_after: float | None = None     # from the last retryable answer
        self._throttle = LogThrottle(log)
        self._thread = threading.Thread(target=self._run, name="export-elasticsearch", daemon=True)
        self._thread.start()

    # -- loop side: cheap --------------------------------------------------------------
    def write_events(self, batch) -> None:
        now = time.time()
        with self._cond:
            room = self.buffer_size - len(self._buf)
            take = batch if room >= len(batch) else batch[:max(room, 0)]
            for line, _meta in take:
                self._seq += 1
                self._buf.append((f"{self._run_id}-{self._seq}", now, line))
            lost = len(batch) - len(take)
            if lost:
                self.stats.lose(lost, "buffer_full")
            if len(self._buf) >= self.batch_size:
                self._cond.notify()
        if lost:
            self._throttle.warning("elasticsearch: buffer full (%d events), dropped %d (%d in total)",
                                   self.buffer_size, lost, self.stats.dropped)

    def pending(self) -> int:
        return len(self._buf)

    # -- worker thread -----------------------------------------------------------------
    def index_for(self, when: float) -> str:
        if not self.daily_index:
            return self.index
        return f"{self.index}-{time.strftime('%Y.%m.%d', time.gmtime(when))}"

    def _take(self) -> list:
        with self._cond:
            if len(self._buf) < self.batch_size and not self._closing:
                self._cond.wait(self.flush_interval)
            n = min(self.batch_size, len(self._buf))
            return [self._buf.popleft() for _ in range(n)]

    def _run(self) -> None:
        delay = 0.5
        batch: list = []
        while True:
            if not batch:
                if self._closing and not self._buf:
                    return
                batch = self._take()
                if not batch:
                    continue
            try:
                self._retry_after = None
                batch = self._send(batch)     # what is left to retry
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # refused, reset or closed mid-request, timed out, TLS failure, a garbled reply
                self._drop_conn()
                self.stats.errors += 1
                self._throttle.warning("elasticsearch: %s unreachable (%s); %d events waiting, retrying",
                                       self.url, exc, len(batch) + len(self._buf))
            if batch:
                self.retries += 1
                with self._cond:
                    if self._closing:
                        if time.monotonic() > self._close_deadline:
                            self.stats.lose(len(batch) + len(self._buf), "shutdown")
                            self._buf.clear()
                            return
                    wait = delay if self._retry_after is None else min(self._retry_after, self.max_retry_delay)
                    self._cond.wait(wait)    # close() wakes us up early
                delay = min(delay * 2, self.max_retry_delay)
            else:
                delay = 0.5

    def _body(self, batch) -> bytes:
        parts = []
        for doc_id, when, line in batch:
            action = {"create": {"_index": self.index_for(when), "_id": doc_id}}
            parts.append(json.dumps(action, separators=(",", ":")))
            if self.data_stream and line.startswith("{"):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
                line = f'{{"@timestamp":"{stamp}",' + line[1:] if line != "{}" else f'{{"@timestamp":"{stamp}"}}'
            parts.append(line)
        return ("\n".join(parts) + "\n").encode("utf-8", "backslashreplace")

    def _connection(self):
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, batch) -> list:
        """POST one bulk request; returns the documents to retry ([] when all are settled)."""
        body = self._body(batch)
        conn = self._connection()
        conn.request("POST", self._path, body=body, headers=self.headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status in RETRYABLE:
            self.stats.errors += 1
            self._retry_after = retry_after(resp.getheader("Retry-After"))
            self._throttle.warning("elasticsearch: bulk request answered %d; retrying %d events",
                                   resp.status, len(batch))
            return batch
        if resp.status != 200:
            # 400/401/403/404 on the whole request: resending cannot help.
            self.stats.errors += 1
            self.stats.lose(len(batch), "unauthorized" if resp.status in (401, 403) else "rejected")
            self._throttle.warning("elasticsearch: bulk request rejected (%d): %s; %d events dropped",
                                   resp.status, data[:300].decode("utf-8", "replace"), len(batch))
            return []
        reply = json.loads(data)
        if not reply.get("errors"):
            self._delivered(len(batch), len(body))
            return []
        retry, ok, failed, example = [], 0, {"mapping_conflict": 0, "rejected": 0}, ""
        for doc, item in zip(batch, reply.get("items", [])):
            result = next(iter(item.values()), {})
            status = result.get("status", 500)
            if status < 300 or status == 409:      # 409: stored by an earlier attempt
                ok += 1
            elif status in RETRYABLE:
                retry.append(doc)
            else:
                error = result.get("error") if isinstance(result.get("error"), dict) else {}
                kind = "mapping_conflict" if error.get("type") in MAPPING_ERRORS else "rejected"
                failed[kind] += 1
                example = example or f"{error.get('type')}: {str(error.get('reason'))[:200]}"
        if len(reply.get("items", [])) < len(batch):
            retry.extend(batch[len(reply.get("items", [])):])
        if any(failed.values()):
            self.stats.errors += 1
            for kind, n in failed.items():
                self.stats.lose(n, kind)
            self._throttle.warning("elasticsearch: %d documents rejected and dropped (%s)",
                                   sum(failed.values()), example)
        self._delivered(ok, len(body) if not retry else 0)
        return retry

    def _delivered(self, n: int, nbytes: int) -> None:
        self.stats.events += n
        self.stats.bytes += nbytes

    def close(self) -> None:
        """Give the worker drain_timeout seconds to send what is buffered; the rest is counted lost."""
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + self.drain_timeout
            self._cond.notify_all()
        self._thread.join(self.drain_timeout + self.timeout + 1)
        if self._thread.is_alive():
            self.stats.lose(len(self._buf), "shutdown")
        self._drop_conn()
