"""Ring buffer consumer that fits an event loop.

`RingBuffer.fd` is an epoll fd that becomes readable when records are waiting,
so the daemon can select()/poll() it with its other sources; `consume()` then
drains what is there without blocking.  Each record reaches `callback(bytes)`.

`consume(limit)` stops after `limit` records (this libbpf, 1.1, has no
ring_buffer__consume_n): the sample callback returns STOP once the budget is
spent, and libbpf, which has already moved its read position past that
record, returns with the rest left in the ring.  Under a flood the kernel
refills the ring as fast as it is read, so an unbounded consume() would not
return before the flood ends.
"""
from __future__ import annotations

import logging

from tetrahost.bpf.native import check_ptr, check_rc, ffi, lib

log = logging.getLogger(__name__)


# What the sample callback returns to stop libbpf's loop (any negative value
# does; this one is told apart from a real error by RingBuffer.consume).
STOP = -1000


@ffi.def_extern()
def th_ringbuf_sample(ctx, data, size):
    rb = ffi.from_handle(ctx)
    try:
        rb.callback(ffi.buffer(data, size)[:])
    except Exception:  # one bad record must not stop the consumer
        rb.callback_errors += 1
        log.exception("ring buffer callback failed on a %d-byte record", size)
    rb._left -= 1
    return STOP if rb._left == 0 else 0


class PinnedMap:
    """A ring buffer map known only by its fd (one opened from a pin): what
    RingBuffer needs of a map."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self.name = name


class RingBuffer:
    def __init__(self, bpf_map, callback):
        self.callback = callback
        self.callback_errors = 0     # records whose callback raised (logged)
        self._left = -1              # records consume() may still hand over; < 0: no limit
        self._handle = ffi.new_handle(self)
        self._ptr = check_ptr(lib.ring_buffer__new(bpf_map.fd, lib.th_ringbuf_sample, self._handle, ffi.NULL),
                              f"create ring buffer on map {bpf_map.name}")

    @property
    def fd(self) -> int:
        return lib.ring_buffer__epoll_fd(self._require())

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for records and handle them; returns the count."""
        rc = lib.ring_buffer__poll(self._require(), timeout_ms)
        if rc == -4:   # EINTR: a signal arrived; the caller's loop decides
            return 0
        return check_rc(rc, "poll ring buffer")

    def consume(self, limit: int = 0) -> int:
        """Handle the records waiting now, at most `limit` of them (0: all),
        without blocking; returns how many were handled."""
        ptr = self._require()
        self._left = limit if limit > 0 else -1
        try:
            rc = lib.ring_buffer__consume(ptr)
        finally:
            left, self._left = self._left, -1
        if rc == STOP:
            return limit - max(left, 0)
        return check_rc(rc, "consume ring buffer")

    def close(self) -> None:
        if self._ptr is not None:
            lib.ring_buffer__free(self._ptr)
            self._ptr = None

    def _require(self):
        if self._ptr is None:
            raise ValueError("ring buffer is closed")
        return self._ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
