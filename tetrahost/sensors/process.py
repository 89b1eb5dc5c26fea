"""The process sensor: exec, fork and exit of every process (csrc/bpf/process.bpf.c).

It owns the BPF object, its three raw-tracepoint links and the ring buffer
every record arrives through; `losses()` reads the in-kernel counters of
records the ring buffer had no room for.
"""
from __future__ import annotations

import logging

from tetrahost.bpf import BpfObject, RingBuffer
from tetrahost.bpf.native import lib
from tetrahost.sensors.objects import find_object

log = logging.getLogger(__name__)

LOSS_SLOTS = {"exec": lib.TH_LOSS_EXEC, "fork": lib.TH_LOSS_FORK, "exit": lib.TH_LOSS_EXIT,
              "hook": lib.TH_LOSS_HOOK, "hook_busy": lib.TH_LOSS_HOOK_BUSY,
              "socktrack": lib.TH_LOSS_SOCKTRACK}
DEFAULT_RINGBUF_BYTES = 8 * 1024 * 1024


class ProcessSensor:
    def __init__(self, on_record, ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES):
        """on_record(bytes) is called for every record, from `consume()`/`poll()`."""
        if ringbuf_bytes & (ringbuf_bytes - 1) or ringbuf_bytes < 4096:
            raise ValueError(f"ring buffer size must be a power of two >= 4096, not {ringbuf_bytes}")
        self._on_record = on_record
        self._ringbuf_bytes = ringbuf_bytes
        self.obj = None
        self.links = []
        self.ringbuf = None

    def start(self) -> "ProcessSensor":
        try:
            self.obj = BpfObject(find_object("process"))
            self.obj.map("events").max_entries = self._ringbuf_bytes
            self.obj.load()
            self.ringbuf = RingBuffer(self.obj.map("events"), self._on_record)
            for prog in self.obj.programs.values():
                self.links.append(prog.attach())
                log.debug("attached %s", prog.section)
        except BaseException:
            self.stop()
            raise
        return self

    def losses(self) -> dict[str, int]:
        m = self.obj.map("losses").typed("uint32_t", "uint64_t")
        return {kind: m.sum_per_cpu(slot) for kind, slot in LOSS_SLOTS.items()}

    def stop(self) -> None:
        """Detach first (no new records), then drain and free."""
        for link in self.links:
            link.destroy()
        self.links = []
        if self.ringbuf is not None:
            try:
                self.ringbuf.consume()
            finally:
                self.ringbuf.close()
                self.ringbuf = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
