"""Where rendered JSON lines go, and the plumbing every exporter shares.

The agent hands each sink one batch of (json_line, EventMeta) per ring-buffer
drain, on its only thread: the one that must get back to the ring buffer
before the kernel runs out of room.  So a sink's write_events() must be cheap
and must never block.  Anything that can be slow (a stdout pipe nobody reads,
a disk that stalls, a remote cluster) runs behind ThreadedSink: a bounded
queue the loop appends to and a worker thread that does the writing.  When
the queue is full the batch is dropped and counted (SinkStats.dropped, shown
by metrics and logged at most every LOG_EVERY seconds): losing export lines
is bad, stalling the ring buffer consumer is worse (the kernel then drops
records before policies' user-space side, metrics or any exporter sees them).
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from tetrahost.events.event import Event, make_forms

log = logging.getLogger(__name__)

LOG_EVERY = 10.0            # seconds between repeated complaints about one sink


@dataclass
class SinkStats:
    """What each exporter did; read by the metrics scrape thread (ints only: atomic reads)."""
    events: int = 0         # lines delivered
    bytes: int = 0
    errors: int = 0         # failed writes / requests
    dropped: int = 0        # events lost (queue full, write failed, journald busy, buffer overflow)
    # dropped split by why (reason -> events): "queue_full", "shutdown", "file_removed",
    # "exporter_error", or the errno name of a failed write/open ("ENOSPC", "EIO", ...).
    # Written by one thread at a time; a reader may see a new key a moment late.
    lost_by_reason: dict[str, int] = field(default_factory=dict)

    def lose(self, n: int, reason: str) -> None:
        """Count n events lost for `reason` (and in the `dropped` total)."""
        if n <= 0:
            return
        self.dropped += n
        self.lost_by_reason[reason] = self.lost_by_reason.get(reason, 0) + n


def errno_reason(exc: OSError) -> str:
    """The lost-event reason for a failed system call: its errno name ("ENOSPC")."""
    return errno.errorcode.get(exc.errno or 0, "write_error")


class LogThrottle:
    """Log a recurring problem at most once per `every` seconds, with how often it happened."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY):
        self.logger = logger
        self.every = every
        self._last = -1e9
        self._suppressed = 0

    def warning(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" ({self._suppressed} similar messages suppressed)"
        self._last, self._suppressed = now, 0
        self.logger.warning(msg, *args)


def lines_of(batch) -> list[str]:
    """The JSON lines of a batch of Events (or of (line, meta) pairs)."""
    if batch and type(batch[0]) is Event:
        return [event.json for event in batch]
    return [item[0] for item in batch]


class LineSink:
    """Lines to a stream, one write per batch; `compact` writes Tetragon's one-liners."""

    def __init__(self, stream, name: str, owns_stream: bool = True, compact: bool = False):
        self.stream = stream
        self.name = name
        self._owns = owns_stream
        self.compact = compact
        self.wants = ("compact",) if compact else ("json",)
        self.stats = SinkStats()
        self._throttle = LogThrottle(log)

    @property
    def lines_written(self) -> int:
        return self.stats.events

    @staticmethod
    def _render(item) -> str:
        if type(item) is Event:
            return item.compact or item.json    # not a kind the compact form knows (rate_limit_info): JSON
        from tetrahost.export.compact import CompactError, format_line
        try:
            return format_line(item[0])         # a (line, meta) pair from outside the agent
        except (CompactError, ValueError):
            return item[0]

    def write_events(self, batch) -> None:
        """batch: list of Events (or (json_line, EventMeta) pairs); one write per batch."""
        if self.compact:
            text = "".join(self._render(item) + "\n" for item in batch)
        else:
            text = "".join(line + "\n" for line in lines_of(batch))
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError) as exc:
            self.stats.errors += 1
            self.stats.lose(len(batch), errno_reason(exc) if isinstance(exc, OSError) else "closed")
            self._throttle.warning("%s: write failed, %d events lost: %s", self.name, len(batch), exc)
            return
        self.stats.events += len(batch)
        self.stats.bytes += len(text.encode("utf-8", "backslashreplace")) if not text.isascii() else len(text)

    def close(self) -> None:
        try:
            if self._owns:
                self.stream.close()
            else:
                self.stream.flush()
        except (OSError, ValueError):
            pass


def stdout_sink(compact: bool = False) -> LineSink:
    return LineSink(sys.stdout, "stdout", owns_stream=False, compact=compact)


def file_sink(path: str) -> LineSink:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return LineSink(os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16), path)


# Events an exporter may have queued.  Each holds its JSON line (~0.3-4.5 KB)
# and its Event: at 65,536 a flood took the agent to 360-406 MB (peak 255-303
# MB in one run here; 116 MB at 8,192, 96 MB at 4,096).  More is not
# needed for throughput: while an exporter's queue is full the agent leaves
# records in the ring buffer (export/delivery.py: back-pressure), which holds
# megabytes of them at a fraction of the memory.
QUEUE_EVENTS = 4096
WRITE_EVENTS = 2048     # events joined into one write (the worker takes more batches in turns)


class ThreadedSink:
    """Runs `inner.write_events` on a worker thread behind a queue of at most `max_events`.

    write_events() only appends to a deque under a lock; if the queued
    events would exceed max_events the batch is dropped and counted in
    inner.stats.dropped (the stats of the real exporter, so metrics show
    the loss where it belongs).  close() lets the worker finish what is
    queued (up to `drain_timeout` seconds), then closes the inner sink.

    accepted_batches / written_batches count the batches handed in and those
    written (or dropped and counted); on_written(), if set, runs on the worker
    after each write: the agent releases ring buffer space by them.  mark(pos),
    if set, records right after each write how far in the ring buffer the
    written events reach (Event.pos), and events at or before skip_until are
    not written (the agent before wrote them): tetrahost/export/delivery.py."""

    def __init__(self, inner, max_events: int = QUEUE_EVENTS, drain_timeout: float = 10.0):
        self.inner = inner
        self.name = inner.name
        self.stats = inner.stats
        self.wants = getattr(inner, "wants", ("json",))    # made on the loop's thread as a batch is queued
        self.max_events = max_events
        self.drain_timeout = drain_timeout
        # [batch, accepted batches it stands for: itself and those dropped after it]
        self._queue: collections.deque = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._writing = False
        self._throttle = LogThrottle(log)
        self.accepted_batches = 0
        self.written_batches = 0
        self._carry = 0             # batches dropped while a write was in flight and nothing queued
        self.on_written = None
        self.mark = None
        self.skip_until = 0
        self.skip_replaced_until = 0    # the same for a replaced generation's ring (Event.pos < 0)
        self.skipped = 0            # events not written again after a restart (written before it)
        self._thread = threading.Thread(target=self._run, name=f"export-{self.name}", daemon=True)
        self._thread.start()

    def write_events(self, batch) -> None:
        if self.skip_until or self.skip_replaced_until:
            batch = self._not_written_before(batch)
        # Decided once, before the forms are made: only the loop's thread queues,
        # so room found here is still there below (the worker only frees it),
        # and a batch that will be dropped is not rendered for this exporter.
        fits = self._queued + len(batch) <= self.max_events
        if fits and batch and not self._closing:
            make_forms(batch, self.wants)
        with self._cond:
            self.accepted_batches += 1
            if self._closing or not batch:
                self._done_in_order()
                return
            if not fits:
                self.stats.lose(len(batch), "queue_full")
                self._done_in_order()
                dropped = True
            else:
                self._queue.append([batch, 1])
                self._queued += len(batch)
                self._cond.notify()
                dropped = False
        if dropped:
            self._throttle.warning("%s: exporter is behind (%d events queued), dropped %d events "
                                   "(%d dropped in total)", self.name, self._queued, len(batch),
                                   self.stats.dropped)

    def has_room(self, n: int) -> bool:
        """Would a batch of n events be queued now (not dropped)?  Read without
        the lock: a stale answer only pauses or reads one turn early."""
        return self._closing or self._queued + n <= self.max_events

    def _not_written_before(self, batch) -> list:
        """The events of batch the agent before this one had not written."""
        until, replaced = self.skip_until, self.skip_replaced_until
        kept = [e for e in batch if not (0 < getattr(e, "pos", 0) <= until or 0 < -getattr(e, "pos", 0) <= replaced)]
        self.skipped += len(batch) - len(kept)
        if until and batch and getattr(batch[-1], "pos", 0) > until:
            self.skip_until = 0         # past the restart's overlap: no more filtering
        return kept

    def _done_in_order(self) -> None:
        """A batch not queued (dropped) is done once those before it are written:
        it rides on the last queued batch, or on the write in flight."""
        if self._queue:
            self._queue[-1][1] += 1
        elif self._writing:
            self._carry += 1
        else:
            self.written_batches += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                # One write for many small batches, but a bounded one: the
                # joined lines and their encoding are transient copies of it.
                batches, taken, size = [], 0, 0
                while self._queue and (not batches or size + len(self._queue[0][0]) <= WRITE_EVENTS):
                    batch, n = self._queue.popleft()
                    batches.append(batch)
                    taken += n
                    size += len(batch)
                self._queued -= size
                self._writing = True
            merged = [item for b in batches for item in b]
            try:
                self.inner.write_events(merged)
            except Exception:
                self.stats.errors += 1
                self.stats.lose(len(merged), "exporter_error")
                log.exception("%s: exporter failed", self.name)
            finally:
                with self._cond:
                    self._writing = False
                    self.written_batches += taken + self._carry
                    self._carry = 0
                    self._cond.notify_all()
            if self.mark is not None:
                self._mark(merged)
            if self.on_written is not None:
                try:
                    self.on_written()
                except Exception:
                    log.exception("%s: after-write callback failed", self.name)

    def _mark(self, written) -> None:
        for event in reversed(written):     # the newest event from the ring; usually the last one
            pos = getattr(event, "pos", 0)
            if pos > 0:                     # < 0: a replaced generation's ring, marked there
                self.mark(pos)
                return

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued so far is written (True), at most timeout seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._writing, timeout)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(self.drain_timeout)
        if self._thread.is_alive():
            log.warning("%s: exporter did not finish within %.0fs; %d queued events lost",
                        self.name, self.drain_timeout, self._queued)
            self.stats.lose(self._queued, "shutdown")
            return
        self.inner.close()
