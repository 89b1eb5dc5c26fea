"""Ring buffer consumer that fits an event loop.

`RingBuffer.fd` is an epoll fd that becomes readable when records are waiting,
so the daemon can select()/poll() it with its other sources; `consume()` then
drains what is there without blocking.  Each record reaches `callback(bytes)`.
"""
from __future__ import annotations

import logging

from tetrahost.bpf.native import check_ptr, check_rc, ffi, lib

log = logging.getLogger(__name__)


@ffi.def_extern()
def th_ringbuf_sample(ctx, data, size):
    rb = ffi.from_handle(ctx)
    try:
        rb.callback(ffi.buffer(data, size)[:])
    except Exception:  # one bad record must not stop the consumer
        rb.callback_errors += 1
        log.exception("ring buffer callback failed on a %d-byte record", size)
    return 0


class PinnedMap:
    """A ring buffer map known only by its fd (one opened from a pin): what
    RingBuffer needs of a map."""

    def __init__(self, fd: int, name: str):
        self.fd = fd
        self.name = name


class RingBuffer:
    def __init__(self, bpf_map, callback):
        self.callback = callback
        self.callback_errors = 0
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

    def consume(self) -> int:
        """Handle every record waiting now, without blocking."""
        return check_rc(lib.ring_buffer__consume(self._require()), "consume ring buffer")

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
