"""The process sensor: exec, fork and exit of every process (csrc/bpf/process.bpf.c).

It owns the BPF object, its three raw-tracepoint links and the ring buffer
every record arrives through; `losses()` reads the in-kernel counters of
records the ring buffer had no room for.

With a PinStore (tetrahost/sensors/pins.py) the maps and links are pinned,
so the sensor keeps recording into the ring buffer while no agent runs; an
agent adopting them loads no program: it reuses the pinned maps and holds the
pinned links, and reads what was written meanwhile.
"""
from __future__ import annotations

import logging
import os

from tetrahost.bpf import BpfObject, RingBuffer
from tetrahost.bpf.native import lib
from tetrahost.sensors.objects import find_object

log = logging.getLogger(__name__)

LOSS_SLOTS = {"exec": lib.TH_LOSS_EXEC, "fork": lib.TH_LOSS_FORK, "exit": lib.TH_LOSS_EXIT,
              "hook": lib.TH_LOSS_HOOK, "hook_busy": lib.TH_LOSS_HOOK_BUSY,
              "socktrack": lib.TH_LOSS_SOCKTRACK}
DEFAULT_RINGBUF_BYTES = 8 * 1024 * 1024


class ProcessSensor:
    def __init__(self, on_record, ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES, deferred: bool = False):
        """on_record(bytes) is called for every record, from `consume()`/`poll()`;
        deferred: the owner releases ring space (RingBuffer.commit), and closes
        the ring (close_ring) after its last commit."""
        if ringbuf_bytes & (ringbuf_bytes - 1) or ringbuf_bytes < 4096:
            raise ValueError(f"ring buffer size must be a power of two >= 4096, not {ringbuf_bytes}")
        self._on_record = on_record
        self._ringbuf_bytes = ringbuf_bytes
        self._deferred = deferred
        self.obj = None
        self.links = []
        self.ringbuf = None
        self.adopted = False

    def start(self, pins=None) -> "ProcessSensor":
        """pins: a PinStore; its generation is adopted when pins.adopted, else
        what is loaded here is pinned into it."""
        try:
            self.obj = BpfObject(find_object("process"))
            self.obj.map("events").max_entries = self._ringbuf_bytes
            if pins is not None and pins.adopted:
                self._adopt(pins)
            else:
                self.obj.load()
                for prog in self.obj.programs.values():
                    self.links.append(prog.attach())
                    log.debug("attached %s", prog.section)
                if pins is not None:
                    self._pin(pins)
            self.ringbuf = RingBuffer(self.obj.map("events"), self._on_record, deferred=self._deferred)
        except BaseException:
            self.stop()
            raise
        return self

    def _user_maps(self):
        return [m for m in self.obj.maps.values() if not lib.bpf_map__is_internal(m._ptr)]

    def _adopt(self, pins) -> None:
        """The pinned maps in place of new ones, no program loaded: the pinned
        links keep the previous agent's (same build) programs running."""
        from tetrahost.bpf.pinned import obj_get
        for m in self._user_maps():
            fd = obj_get(pins.gen_path("process", m.name))
            try:
                m.reuse_fd_number(fd)
            finally:
                os.close(fd)
        for prog in self.obj.programs.values():
            prog.autoload = False
        self.obj.load()
        self.links = pins.open_links(pins.gen_path("process"), len(self.obj.programs), "process sensor")
        self.adopted = True

    def _pin(self, pins) -> None:
        for m in self._user_maps():
            m.pin(pins.gen_path("process", m.name))
        pins.pin_links(pins.gen_path("process"), self.links)

    def losses(self) -> dict[str, int]:
        m = self.obj.map("losses").typed("uint32_t", "uint64_t")
        return {kind: m.sum_per_cpu(slot) for kind, slot in LOSS_SLOTS.items()}

    def release(self) -> None:
        """Exit leaving the pinned sensor running: read what is there, close
        our fds (the pins keep the links and maps)."""
        self.stop()

    def stop(self) -> None:
        """Detach first (no new records), then drain and free; a deferred
        ring stays mapped (the mapping holds the map) until close_ring()."""
        for link in self.links:
            link.destroy()
        self.links = []
        if self.ringbuf is not None:
            try:
                self.ringbuf.consume()
            finally:
                if not self._deferred:
                    self.close_ring()
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def close_ring(self) -> None:
        if self.ringbuf is not None:
            self.ringbuf.close()
            self.ringbuf = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
