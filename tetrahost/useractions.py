"""Actions done in user space when a selector matched: DnsLookup and GetUrl.

Tetragon's canary actions: a matching event makes the agent resolve a name
(`argFqdn`) or fetch a URL (`argUrl`), so that a DNS server or web endpoint
the operator watches learns of it.  The kernel side posts the event as for
Post; the agent's event loop only queues the action here (never blocks on
the network), and one worker thread does them:

- a bounded queue (QUEUE_SIZE): a burst beyond it is dropped and counted
  ("queue_full"), the loop never waits;
- a rate limit per target (MIN_INTERVAL seconds between two requests for the
  same name or URL): repeats within it are counted "rate_limited";
- a timeout per request (TIMEOUT seconds: the URL's socket; the name's
  getaddrinfo, which has no timeout of its own, runs on a small pool and is
  abandoned, counted "timeout", when late);
- failures (no such name, connection refused, HTTP errors) are counted
  "failed" and logged at a bounded rate; nothing they raise leaves the worker.

Counters (`counts[(action, result)]`) are tetrahost_user_actions_total.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
MIN_INTERVAL = 1.0          # seconds between two requests for one target
TIMEOUT = 5.0
MAX_BODY = 64 * 1024        # bytes of a response read (then the connection is closed)
RESULTS = ("done", "failed", "timeout", "queue_full", "rate_limited")
ACTIONS = ("DnsLookup", "GetUrl")


class UserActions:
    def __init__(self, min_interval: float = MIN_INTERVAL, timeout: float = TIMEOUT,
                 queue_size: int = QUEUE_SIZE):
        self.min_interval, self.timeout = min_interval, timeout
        self.counts: dict[tuple[str, str], int] = {(a, r): 0 for a in ACTIONS for r in RESULTS}
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._last: dict[tuple[str, str], float] = {}
        self._resolver = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dnslookup")
        self._thread = threading.Thread(target=self._run, name="user-actions", daemon=True)
        self._thread.start()
        self._last_warning = 0.0

    def submit(self, action: str, target: str) -> None:
        """From the event loop: queue, or count the drop; never blocks."""
        try:
            self._queue.put_nowait((action, target))
        except queue.Full:
            self._count(action, "queue_full")

    def close(self) -> None:
        self._queue.put((None, None))
        self._thread.join(timeout=self.timeout + 1)
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, timeout: float) -> bool:
        """Tests: True once everything queued so far was handled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _count(self, action: str, result: str) -> None:
        self.counts[(action, result)] = self.counts.get((action, result), 0) + 1

    def _run(self) -> None:
        while True:
            action, target = self._queue.get()
            try:
                if action is None:
                    return
                self._one(action, target)
            except Exception:       # never end the worker: the next action must still run
                log.exception("user action %s %s failed", action, target)
                self._count(action, "failed")
            finally:
                self._queue.task_done()

    def _one(self, action: str, target: str) -> None:
        now = time.monotonic()
        last = self._last.get((action, target))
        if last is not None and now - last < self.min_interval:
            self._count(action, "rate_limited")
            return
        self._last[(action, target)] = now
        if len(self._last) > 4096:      # bounded: forget the oldest targets
            for key in sorted(self._last, key=self._last.get)[:2048]:
                del self._last[key]
        try:
            detail = self._lookup(target) if action == "DnsLookup" else self._get(target)
        except TimeoutError:
            self._count(action, "timeout")
            self._warn(f"{action} {target}: no answer within {self.timeout:g} s")
            return
        except (OSError, ValueError, urllib.error.URLError) as exc:
            self._count(action, "failed")
            self._warn(f"{action} {target}: {exc}")
            return
        self._count(action, "done")
        log.info("user action %s %s: %s", action, target, detail)

    def _lookup(self, name: str) -> str:
        future = self._resolver.submit(socket.getaddrinfo, name, None, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None
        return ", ".join(sorted({info[4][0] for info in infos}))

    def _get(self, url: str) -> str:
        request = urllib.request.Request(url, headers={"User-Agent": "tetrahost"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:   # noqa: S310 (http/https only: validated)
                response.read(MAX_BODY)
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:     # the server answered: the canary was seen
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise TimeoutError from None
            raise

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:      # at most one warning per 10 s
            self._last_warning = now
            log.warning("user action %s", message)
