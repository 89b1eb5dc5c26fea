"""The agent's heap after a flood: given back to the system once it is over.

Under a flood of events the read path allocates and frees batches of JSON
lines (megabytes each) on the loop's thread and on every exporter's thread.
glibc keeps up to the trim threshold (16 MiB, return_freed_memory_promptly below) free at the top
of each arena on purpose, so that the next batch does not fault its pages in
again, and a free chunk below a live one is never given back at all.  The
agent then stays tens of megabytes above its resting size long after the
flood (bench/event_rates.py: 56 MiB before, 95 after).

HeapTrim watches how many events the exporters were handed: once a busy
period (HEAP_TRIM_AFTER_EVENTS since the last trim) is followed by a quiet
interval (under HEAP_QUIET_EVENTS in HEAP_CHECK_SECONDS), it calls
malloc_trim(0), which gives back the free pages of every arena.  It never
runs during the flood itself, where keeping the pages is what makes it cheap.
"""
from __future__ import annotations

import ctypes
import logging
import resource

log = logging.getLogger("tetrahost.heap")

HEAP_CHECK_SECONDS = 2.0
HEAP_TRIM_AFTER_EVENTS = 20_000     # a flood, not a host's ordinary traffic
HEAP_QUIET_EVENTS = 500             # per check interval: the flood is over


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_freed_memory_promptly() -> bool:
    """Fixed malloc thresholds, so that freed memory goes back to the system.

    libbpf parses the kernel's BTF (megabytes) for every object it loads,
    policy hooks and their warm spares included, and frees it afterwards.
    glibc's default thresholds adapt upwards once such a large block is
    freed, and later ones then stay in the heap: measured with the seed
    policies, 82 MiB resident instead of 49 (bench/footprint.py).  Setting
    them disables that adaptation.  False where the C library is not glibc.

    The trim threshold (free memory kept at the top of the heap) is 16 MiB,
    not 128 KiB: a batch of events (1024 JSON lines of up to ~4.5 KB and their
    encoded bytes, ~10 MB) is freed and allocated again batch after batch,
    and giving it back each time cost two page faults per event under a flood
    (bench/event_rates.py; 18.8 -> 12.3 µs of CPU per event offline);
    HeapTrim gives it back once a flood is over.

    One arena for every thread: each exporter thread allocates its batch's
    encoded lines, and with an arena of its own kept that arena's high-water
    mark too (measured after 200k-events/s floods: 95 MiB resident with
    per-thread arenas and no trim, 73 with the trim, 63 with the trim and
    one arena; 54 at start).  Sharing the arena's lock cost nothing
    measurable (exec storm: 29-30 µs of agent CPU per exec either way)."""
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8         # <malloc.h>
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return (bool(mallopt(m_mmap_threshold, 128 * 1024)) and bool(mallopt(m_trim_threshold, 16 << 20))
            and bool(mallopt(m_arena_max, 1)))


class HeapTrim:
    """A component: an exporter that only counts, and a timer on the loop."""

    name = "heap-trim"

    def __init__(self, trim=None):
        self._trim = trim if trim is not None else _malloc_trim()
        self._since_trim = 0    # events handed over since the last trim
        self._interval = 0      # ... in the current check interval
        self.trims = 0

    def start(self, services) -> None:
        if self._trim is None:
            return
        services.exporters.add(self)
        services.loop.add_timer(HEAP_CHECK_SECONDS, self.check)

    def write_events(self, batch) -> None:
        self._since_trim += len(batch)
        self._interval += len(batch)

    def check(self) -> bool:
        """Once per interval on the loop's thread; True when it trimmed."""
        quiet = self._interval < HEAP_QUIET_EVENTS
        self._interval = 0
        if not quiet or self._since_trim < HEAP_TRIM_AFTER_EVENTS:
            return False
        before = _rss_kib() if log.isEnabledFor(logging.DEBUG) else 0
        self._trim(0)
        self._since_trim = 0
        self.trims += 1
        if before:
            log.debug("flood over: heap trimmed, resident %d -> %d KiB", before, _rss_kib())
        return True

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def _rss_kib() -> int:
    """Resident size now (statm), for the debug line; 0 if unreadable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() // 1024
    except (OSError, ValueError, IndexError):
        return 0
