"""Ring buffer consumer that fits an event loop and delivers at least once.

`RingBuffer.fd` is the map's fd, readable (poll/select) while records are
waiting.  An event loop watches `wake_fd` instead, an epoll fd that becomes
readable when the kernel wakes the ring's readers, edge-triggered: the map
fd stays readable while read records are not yet committed (the kernel
counts them as waiting), and a loop watching it would spin until the
exporters catch up.  `clear_wake()` takes the edge.  `consume()` hands what
is there to `callback(bytes)` without blocking, at most
`limit` records: under a flood the kernel refills the ring as fast as it is
read, so an unbounded consume() would not return before the flood ends.

Reading and committing are two steps (csrc/ring.c).  By default consume()
commits what it read, as libbpf's consumer does.  With `deferred=True` the
kernel may reuse the ring only up to what the owner `commit()`s: the agent
commits a position once the events made of the records before it are
written by its exporters (tetrahost/delivery.py).  A pinned ring buffer
then still holds, for the next agent, what a killed one had read but not
yet written: at least once, never lost.
"""
from __future__ import annotations

import logging
import os
import select
import struct
import threading

from tetrahost.bpf.maps import mmap_array
from tetrahost.bpf.native import ffi, lib

log = logging.getLogger(__name__)

# One read copies at most this much; a record never comes near it (the
# largest, a hook record, is under 2 KiB), and one that did would be skipped
# and counted (csrc/ring.c), never wedge the reader.
READ_BUFFER_BYTES = 1 << 20
# csrc/ring.c's header before each record it copies out: 4-byte length, 8-byte
# end position (native order), read with one unpack per record.
_OUT_HDR = struct.Struct("=IQ")
_OUT_HDR_SIZE = lib.th_ring_out_hdr
if _OUT_HDR.size != _OUT_HDR_SIZE:
    raise ImportError(f"csrc/ring.c's record header is {_OUT_HDR_SIZE} bytes, this reader expects {_OUT_HDR.size}")


class PinnedMap:
    """A ring buffer map known only by its fd (one opened from a pin): what
    RingBuffer needs of a map."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self.name = name


class RingBuffer:
    def __init__(self, bpf_map, callback, deferred: bool = False):
        self.callback = callback
        self.callback_errors = 0     # records whose callback raised (logged)
        self.deferred = deferred
        self.name = bpf_map.name
        self._fd = bpf_map.fd
        self._ring = ffi.new("struct th_ring *")
        rc = lib.th_ring_map(self._ring, self._fd)
        if rc < 0:
            raise OSError(-rc, f"map ring buffer {bpf_map.name}: {os.strerror(-rc)}")
        self._open = True
        self._commit_lock = threading.Lock()    # commit() may come from exporter threads
        self._out = ffi.new("uint8_t[]", READ_BUFFER_BYTES)
        self._out_view = ffi.buffer(self._out)
        self._used = ffi.new("size_t *")
        self._wake = None
        self._asleep = None      # the ring_ctl map's flag, mmapped (sleep_flag())
        # The ring position just after the record the callback is handling:
        # where its events' delivery is marked (tetrahost/export/delivery.py).
        self.record_end = 0

    @property
    def fd(self) -> int:
        self._require()
        return self._fd

    @property
    def wake_fd(self) -> int:
        """Readable after the kernel woke the ring's readers: the first record
        after doze(), or TH_WAKEUP_BYTES waiting (csrc/bpf/lib/common.bpf.h)."""
        self._require()
        if self._wake is None:
            self._wake = select.epoll()
            self._wake.register(self._fd, select.EPOLLIN | select.EPOLLET)
        return self._wake.fileno()

    def clear_wake(self) -> None:
        if self._wake is not None:
            self._wake.poll(0)

    @property
    def read_pos(self) -> int:
        """Where the next read starts: commit(read_pos) releases all read so far."""
        return self._require().read_pos

    @property
    def oversized(self) -> int:
        """Records skipped because no read buffer could hold them (the agent
        counts them: tetrahost_records_dropped_total{reason="oversized"})."""
        return self._ring.oversized

    @property
    def released_pos(self) -> int:
        """Up to where the kernel may reuse the ring (the committed consumer position)."""
        return lib.th_ring_consumer(self._require())

    @property
    def producer_pos(self) -> int:
        return lib.th_ring_producer(self._require())

    def unread(self) -> bool:
        """Records (or parts being written) wait after the read position."""
        return self.unread_bytes() > 0

    def sleep_flag(self, ctl_map) -> None:
        """Map the programs' ring_ctl map (struct th_ring_ctl, csrc/events.h),
        whose flag doze() sets."""
        self._ctl_mm, ctl = mmap_array(ctl_map.fd, "struct th_ring_ctl", 1)
        self._asleep = ffi.addressof(ctl[0], "asleep")

    def doze(self) -> bool:
        """Ask the programs to wake wake_fd at their next record, unless
        records wait already (then False: read them).  Without sleep_flag(),
        always False: the owner keeps polling."""
        if self._asleep is None:
            return False
        return bool(lib.th_ring_doze(self._require(), self._asleep))

    def unread_bytes(self) -> int:
        """Bytes written after the read position (records, or parts being written)."""
        ring = self._require()
        return lib.th_ring_producer(ring) - ring.read_pos

    def uncommitted_bytes(self) -> int:
        """Bytes read but not yet released to the kernel."""
        ring = self._require()
        return ring.read_pos - lib.th_ring_consumer(ring)

    def commit(self, pos: int | None = None) -> None:
        """Release the ring up to pos (a read_pos seen earlier; default: all read)."""
        with self._commit_lock:
            if not self._open:
                return          # closed meanwhile (an exporter thread late at shutdown)
            ring = self._ring
            pos = ring.read_pos if pos is None else pos
            if pos > lib.th_ring_consumer(ring):
                lib.th_ring_commit(ring, pos)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for records and handle them; returns the count."""
        waiter = select.poll()
        waiter.register(self.fd, select.POLLIN)
        try:
            waiter.poll(timeout_ms)
        except InterruptedError:     # a signal: the caller's loop decides
            return 0
        return self.consume()

    def consume(self, limit: int = 0) -> int:
        """Handle the records waiting now, at most `limit` of them (0: all),
        without blocking; returns how many were handled."""
        ring = self._require()
        left = limit if limit > 0 else -1
        handled = 0
        while left != 0:
            n = lib.th_ring_read(ring, self._out, READ_BUFFER_BYTES, left if left > 0 else 1 << 30, self._used)
            if n == 0:
                break
            view, off, hdr, unpack = self._out_view, 0, _OUT_HDR_SIZE, _OUT_HDR.unpack_from
            for _ in range(n):
                size, self.record_end = unpack(view, off)
                raw = view[off + hdr:off + hdr + size]
                off += hdr + size
                try:
                    self.callback(raw)
                except Exception:  # one bad record must not stop the consumer
                    self.callback_errors += 1
                    log.exception("ring buffer callback failed on a %d-byte record", size)
            handled += n
            if left > 0:
                left -= n
        if not self.deferred:
            self.commit()
        return handled

    def close(self) -> None:
        with self._commit_lock:
            if self._open:
                self._open = False
                lib.th_ring_unmap(self._ring)
                if self._asleep is not None:
                    self._asleep[0] = 0         # nobody here to wake (a later reader polls first)
                    self._asleep = self._ctl_mm = None
                if self._wake is not None:
                    self._wake.close()
                    self._wake = None

    def _require(self):
        if not self._open:
            raise ValueError("ring buffer is closed")
        return self._ring

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
