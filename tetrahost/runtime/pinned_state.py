"""The agent's pinned-state half (docs/pinning.md): adopting what a previous
agent left in the bpffs, reading a replaced generation's ring buffer, and
leaving the kernel side enforcing (or not) on the way out.

A mixin of tetrahost.daemon.Agent, kept apart so the agent's module is the
read path: it uses the agent's pins, policies, sensor, counters, delivery
and pipeline (_decode, _handle, _flush, drain_events).
"""
from __future__ import annotations

import logging
import time

from tetrahost.events.records import HookRecord
from tetrahost.export.delivery import BATCH_RECORDS, DeliveryMarks

log = logging.getLogger("tetrahost.daemon")     # the agent's log lines, as before the split


class PinnedState:
    def _on_replaced_record(self, raw: bytes) -> None:
        """A record of a replaced generation (_drain_replaced).  Both
        generations ran for a moment (new attached before old detached): a
        record written after this agent's own program for the same hook (or
        its process sensor) was attached is one that program wrote too."""
        self._record_pos = -self._replaced_reader.record_end     # negative: that ring's, not ours
        record = self._decode(raw)
        if record is None:
            return
        if isinstance(record, HookRecord):
            hs = self.policies.hook_for_record(record.hook_id) if self.policies else None
            since = hs.attached_ns if hs is not None else 0
        else:
            since = self._sensor_attached_ns
        if since and record.ktime >= since:
            self._superseded += 1
            if not isinstance(record, HookRecord):
                self.cache.handle(record)       # the process as it is now, not its event again
            return
        self._handle(record)

    def _open_pins(self) -> None:
        if not self.pin_dir:
            return
        from tetrahost.sensors.pins import PinStore
        try:
            pins = PinStore(self.pin_dir)
            pins.open(self.ringbuf_bytes)
        except OSError as exc:
            log.error("pinned state: %s unusable, enforcement will not survive this agent: %s",
                      self.pin_dir, exc)
            return
        self.pins = pins
        self._hold_ring = pins.adopted

    def _finish_pins(self) -> None:
        """Start-up loads are attached: drop what they replace, then read the ring buffer."""
        if self.pins is None:
            return
        try:
            if self.policies is not None:
                self.policies.finish_start(drain=self._drain_replaced)
            else:
                self.pins.remove_orphans(set(), drain=self._drain_replaced)
                self.pins.write_manifest({})
        except OSError as exc:
            log.error("pinned state: %s", exc)
        finally:
            self._hold_ring = False
        hooks = [h for s in (self.policies.policies.values() if self.policies else ()) for h in s.hooks]
        log.info("pinned state %s (g%d): %s; %d hooks adopted, %d loaded fresh", self.pins.root,
                 self.pins.generation, "adopted" if self.pins.adopted else "new",
                 sum(h.origin == "adopted" for h in hooks), sum(h.origin == "fresh" and h.active for h in hooks))

    def _catch_up(self, seconds: float = 5.0) -> None:
        """Before saying ready: read what the kernel wrote while no agent ran
        (the pinned ring buffer) and start-up took, and wait until the sinks
        wrote it.  A crash or kill -9 soon after start then loses none of the
        gap's events (it would lose what was read but not yet written)."""
        deadline = time.monotonic() + seconds
        while True:
            self.drain_events()
            if not self._ring_behind or time.monotonic() > deadline:
                break
        for sink in self.sinks:
            wait = getattr(sink, "wait_idle", None)
            if wait is not None and not wait(max(0.0, deadline - time.monotonic())):
                log.warning("start-up: %s has not written the backlog yet; going on", sink.name)

    def _drain_replaced(self, fd: int | None, compatible: bool, lost: dict | None = None,
                        delivered_fd: int | None = None) -> None:
        """Read a replaced generation's ring buffer, once its programs are
        detached: what they wrote until this agent's took over (an upgrade
        to another build runs both for a moment), and count what its loss
        counters hold that no agent reported (lost while no agent ran).
        Records another layout cannot be decoded: they are counted, never
        guessed at.  What its agent's exporters had written (delivered_fd: its
        delivery marks) they do not write again."""
        from tetrahost.bpf.ringbuf import RingBuffer, PinnedMap

        for kind, n in (lost or {}).items():
            self._count_lost(kind, n, " by the replaced generation")
        if fd is None:
            return
        before, self._superseded = self.counters.records, 0
        reader = RingBuffer(PinnedMap(fd, "events of a replaced generation"),
                            self._on_replaced_record if compatible else lambda raw: None)
        self._replaced_reader = reader
        if compatible and delivered_fd is not None and self.delivery is not None:
            self.delivery.skip_replaced(DeliveryMarks(delivered_fd), reader.released_pos)
        try:
            # In batches, each let into the exporters' bounded queues before the
            # next (an upgrade's backlog is thousands of records: one batch of
            # them all was bigger than a queue, and dropped whole).
            n = 0
            while True:
                got = reader.consume(BATCH_RECORDS)
                self._flush()
                n += got
                if got < BATCH_RECORDS:
                    break
                if self.delivery is not None:
                    self.delivery.wait_for_room(BATCH_RECORDS)
        finally:
            reader.close()
            self._replaced_reader = None
            if self.delivery is not None:
                self.delivery.end_replaced()
        if compatible:
            log.info("pinned state: %d records of the replaced generation read, %d of them also written by "
                     "this agent's programs (skipped)", self.counters.records - before, self._superseded)
        elif n:
            self.counters.dropped["replaced_generation"] = self.counters.dropped.get("replaced_generation", 0) + n
            log.warning("pinned state: %d records of the replaced generation lost: written by a build whose "
                        "record layout this one cannot decode", n)

    def _shutdown_kernel_side(self) -> None:
        # A start that failed half-way is a crash: what the previous agent
        # pinned keeps enforcing for the next one.
        keep = self.pins is not None and (self.keep_pins or not self._ready)
        if keep and self._ready:    # with what this agent reported of the loss counters, for the next one
            if self.policies is not None:
                self.policies._write_manifest()
            else:
                self.loop.guarded(lambda: self.pins.write_manifest({}), "writing the manifest")
        if self.pins is not None and not keep:
            self.pins.remove_all()          # our fds are now the last references: closing detaches
        if self.policies is not None:
            if keep:
                self.policies.release_all()
            else:
                self.policies.stop_all()
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.sensor.stop()          # detach (unless pinned), then drain what is left
        if keep:
            log.info("pinned state kept in %s: enforcing until the next agent or `tetrahost cleanup`",
                     self.pins.root)
