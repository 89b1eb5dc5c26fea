"""When the kernel may reuse ring buffer space: once the events are written.

The agent reads records, turns them into events and hands those to its
exporters; the file, journald and stdout exporters write on threads of their
own (ThreadedSink).  Were the ring released as it is read (libbpf's way), a
kill -9 between the read and those writes would lose the events: the pinned
ring buffer the next agent reads would no longer hold them.  So the ring is
released (RingBuffer.commit) only up to the records whose events every
threaded exporter has written, or dropped and counted (a full queue).

A stalled exporter must not fill the ring: the kernel would then drop
records before any exporter, metrics or the process cache saw them.  Records
held longer than MAX_HOLD seconds, or more than half the ring, are released
anyway (`forced`): then, and only then, a crash can lose read events.

After a kill -9 the next agent re-reads what was read but not released.  So
that it does not write again what an exporter had written, each exporter
marks, right after each write, how far in the ring its written events reach
(DeliveryMarks: a map of the process sensor's, mmapped, pinned with the ring
buffer); the next agent's exporter skips the events at or before its mark.
Only a kill in the instant between a write and its mark makes that batch
twice, and only for that exporter.  At least once, never silently lost.

Back-pressure: while an exporter's queue has no room for another batch, the
agent does not read the ring (backlogged()): the records wait there, where
they cost no agent memory, and what does not fit is counted by the kernel's
loss counters, never dropped unseen.  An exporter full for longer than
MAX_HOLD is stalled, not slow: reading goes on without waiting for it (it
drops and counts what it cannot queue), so one stuck exporter costs the
others at most MAX_HOLD.  Nor does a slow one cost them events: once the
unread records fill a quarter of the ring (half of max_bytes, the most that
read records may hold), reading goes on (`overruns`) and the exporter without
room drops the batch and counts it.  Measured before this bound, with
journald on (it takes at most ~14k entries/s here): a 100k-events/s flood lost 76 %
for the file too, in the kernel, because the ring waited for journald.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time

from tetrahost.export.sinks import LogThrottle

log = logging.getLogger(__name__)

MAX_HOLD = 2.0              # seconds a read record may wait for the exporters
# Records whose events go to the exporters at once.  A batch of all a flood's
# records (one unbounded drain) took the agent past 1 GB and was dropped whole
# at the exporters' bounded queues; so was an upgrade's backlog read at once.
BATCH_RECORDS = 1024


class DeliveryMarks:
    """The `delivered` map (struct th_delivered[TH_DELIVERED_SLOTS], csrc/events.h)
    mmapped: one slot per exporter, by a hash of its name."""

    def __init__(self, map_fd: int):
        from tetrahost.bpf.maps import mmap_array
        from tetrahost.bpf.native import lib
        self._mm, self._slots = mmap_array(map_fd, "struct th_delivered", lib.TH_DELIVERED_SLOTS)
        self._count = lib.TH_DELIVERED_SLOTS

    def _find(self, key: int):
        for i in range(self._count):
            if self._slots[i].exporter == key:
                return self._slots[i]
        return None

    def written(self, name: str) -> int:
        """The position this exporter marked, 0 if it has no slot (read only)."""
        slot = self._find(self.key(name))
        return slot.pos if slot is not None else 0

    @staticmethod
    def key(name: str) -> int:
        return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") | 1

    def slot(self, name: str):
        """(slot, the position marked before) for this exporter; a free slot is
        taken; None when all are taken by others."""
        key = self.key(name)
        slot = self._find(key)
        if slot is not None:
            return slot, slot.pos
        free = self._find(0)
        if free is None:
            return None
        free.pos = 0
        free.exporter = key
        return free, 0


def threaded_exporters(sinks) -> list:
    """The exporters that write behind a queue (they count their batches), also
    those inside a pipeline (its `sinks`)."""
    out = []
    for sink in sinks:
        if hasattr(sink, "written_batches"):
            out.append(sink)
        out.extend(threaded_exporters(getattr(sink, "sinks", ())))
    return out


class Delivery:
    def __init__(self, ring, sinks, max_hold: float = MAX_HOLD, max_bytes: int | None = None,
                 clock=time.monotonic, marks: DeliveryMarks | None = None):
        self.ring = ring
        self.exporters = threaded_exporters(sinks)
        self.max_hold = max_hold
        self.max_bytes = max_bytes
        self.clock = clock
        self.forced = 0             # releases before the exporters wrote (a stalled exporter)
        self.paused = 0             # loop turns that left the ring unread: an exporter's queue was full
        self.overruns = 0           # turns that read on although one was full: the ring was filling
        self.on_room = None         # called (any thread) when a paused reader may read again
        self._full_since: dict[int, float] = {}     # exporter index -> when its queue was first seen full
        self._waiting = False
        # (ring position, each exporter's accepted batches then, when read); oldest first
        self._pending: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._throttle = LogThrottle(log)
        for exporter in self.exporters:
            exporter.on_written = self.settle
        self.marks = marks          # the mmapped map: must outlive every exporter's mark()
        if marks is not None:
            self._resume(marks)

    def _resume(self, marks: DeliveryMarks) -> None:
        """Each exporter marks its writes in its slot; what a previous agent's
        exporter of the same name wrote beyond the released position (it was
        killed before the release) it does not write again."""
        released, newest = self.ring.released_pos, self.ring.producer_pos
        if newest > released:
            log.info("ring buffer: %d bytes of records waiting at start (position %d to %d)",
                     newest - released, released, newest)
        for exporter in self.exporters:
            taken = marks.slot(exporter.name)
            if taken is None:
                log.warning("%s: no delivery slot left; after a crash it may write events twice", exporter.name)
                continue
            slot, before = taken

            def mark(pos, slot=slot, marks=marks):     # marks: keeps the mapping alive
                slot.pos = pos
            exporter.mark = mark
            if released < before <= newest:
                exporter.skip_until = before
                log.info("%s: %d bytes of ring buffer records read again were written before the restart: "
                         "not written twice", exporter.name, before - released)

    def skip_replaced(self, marks: DeliveryMarks, released: int) -> None:
        """A replaced generation's ring is read next (its events carry minus
        their position in it): each exporter skips what the same exporter of
        that generation's agent had written."""
        for exporter in self.exporters:
            before = marks.written(exporter.name)
            exporter.skip_replaced_until = before if before > released else 0

    def end_replaced(self) -> None:
        for exporter in self.exporters:
            exporter.skip_replaced_until = 0

    def flushed(self) -> None:
        """The loop handed everything read so far to the exporters."""
        pos = self.ring.read_pos
        targets = tuple(e.accepted_batches for e in self.exporters)
        with self._lock:
            if self._pending and self._pending[-1][0] == pos:
                return
            self._pending.append((pos, targets, self.clock()))
        self.settle()

    def settle(self) -> None:
        """Release the ring up to the newest position all exporters wrote;
        called by the loop and by exporter threads after each write."""
        with self._lock:
            pos = None
            while self._pending and all(e.written_batches >= t
                                        for e, t in zip(self.exporters, self._pending[0][1])):
                pos = self._pending.popleft()[0]
            if pos is not None:
                self.ring.commit(pos)
        if self._waiting and self.on_room is not None:
            self._waiting = False
            self.on_room()          # wake the loop: a write made room

    def backlogged(self, batch: int) -> bool:
        """Should the loop leave the ring unread this turn?  True while an
        exporter, full for at most max_hold seconds, has no room for `batch`
        (each such turn counted in `paused`; a write that makes room calls on_room)."""
        if not self._blocked(batch):
            return False
        if self._ring_filling():
            self.overruns += 1      # the full exporter drops this batch (counted), the others get it
            return False
        self.paused += 1
        self._waiting = True
        return True

    def wait_for_room(self, batch: int, poll: float = 0.005) -> None:
        """Block until the exporters have room for `batch` (start-up reads, which
        have no loop to return to); a stalled exporter is passed by after max_hold."""
        while self._blocked(batch):
            time.sleep(poll)

    def _ring_filling(self) -> bool:
        """Unread records past half of max_bytes: waiting longer for a full
        exporter would have the kernel drop records for every exporter."""
        if not self.max_bytes:
            return False
        return self.ring.producer_pos - self.ring.read_pos > self.max_bytes // 2

    def _blocked(self, batch: int) -> bool:
        now, wait = None, False
        for i, exporter in enumerate(self.exporters):
            if exporter.has_room(batch):
                self._full_since.pop(i, None)
                continue
            now = now or self.clock()
            since = self._full_since.setdefault(i, now)
            if now - since <= self.max_hold:
                wait = True
        return wait

    def release_stale(self) -> None:
        """Once a loop turn: release what a stalled exporter holds too long."""
        with self._lock:
            if not self._pending:
                return
            now, pos = self.clock(), None
            while self._pending and (now - self._pending[0][2] > self.max_hold or
                                     (self.max_bytes and self.ring.uncommitted_bytes() > self.max_bytes)):
                pos = self._pending.popleft()[0]
                self.forced += 1
                self.ring.commit(pos)
        if pos is not None:
            slow = [e.name for e in self.exporters if e.written_batches < e.accepted_batches]
            self._throttle.warning("ring buffer released before %s wrote its events (behind more than "
                                   "%.0f s or half the ring): a crash now would lose them",
                                   ", ".join(slow) or "an exporter", self.max_hold)

