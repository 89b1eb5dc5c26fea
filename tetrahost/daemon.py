"""The agent's main loop: sensors -> decode -> enrich -> Event -> sinks.

One thread, turned by tetrahost/runtime/loop.py: it waits on the ring
buffer's epoll fd, a wake-up pipe (signals, other threads) and whatever fds
components register with the loop (control socket, policy directory watch);
components get the loop, the status board and the exporters as services
(tetrahost/runtime/services.py), never the agent.  Each turn drains the ring buffer and
hands the sinks batches of Events (tetrahost.events.event) of at most
BATCH_RECORDS records each, so the cost of an export is paid per burst, not per event, and
a flood (the kernel refilling the ring as fast as it is read) neither grows
one batch without bound nor keeps the loop from its other work: a turn reads
at most TURN_RECORDS records, the rest waits for the next turn.

Whoever reports on the agent (tetra status, sd_notify, metrics) reads one
immutable snapshot per turn (tetrahost/runtime/snapshot.py), never the live
objects the loop is changing.

With a pin directory (agent.pin_dir) the kernel side outlives the process
(tetrahost/sensors/pins.py, runtime/pinned_state.py, docs/pinning.md): a crash or a restart leaves
every program attached, and the next agent adopts what it finds.  While it
adopts, the ring buffer is not read: records written while no agent ran
(and meanwhile) need their hooks known first.  An orderly exit removes the
pins unless keep_pins says they stay (agent.keep_enforcing_on_stop, or the
systemd unit, whose ExecStopPost tells a stop from a restart).
"""
from __future__ import annotations

import logging
import math
import signal
import socket
import time
from dataclasses import dataclass, field

from tetrahost.constants import TH_WAKEUP_BYTES
from tetrahost.events.cgroups import CgroupResolver
from tetrahost.events.decode import DecodeError, decode
from tetrahost.events.enrich import Enricher
from tetrahost.events.event import Event
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.proccache import ProcessCache
from tetrahost.export.delivery import BATCH_RECORDS, MAX_HOLD, Delivery, DeliveryMarks
from tetrahost.export.hook_json import HookEventRenderer
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.runtime.fdlimit import raise_fd_limit
from tetrahost.runtime.loop import EventLoop
from tetrahost.runtime.pinned_state import PinnedState
from tetrahost.runtime.services import Exporters, Services
from tetrahost.runtime.snapshot import SnapshotInputs, StatusBoard
from tetrahost.sensors.mounts import ensure_mounted
from tetrahost.sensors.process import DEFAULT_RINGBUF_BYTES, ProcessSensor

log = logging.getLogger(__name__)

LOSS_CHECK_INTERVAL = 1.0    # seconds between reads of the in-kernel loss counters
# When the ring is read.  Records do not wake us each (a wake-up costs more
# than the record: csrc/bpf/lib/common.bpf.h): while they come, the loop reads
# every DRAIN_INTERVAL, the most an event waits to be read.  A read that
# found nothing puts the loop to sleep on the ring (RingBuffer.doze: no timer
# turns an idle agent, which polled 10 times a second before, ~0.2 ms of
# CPU each here), and the first record after that wakes it; the read follows
# COALESCE_SECONDS later, so it takes the rest of the burst (an exec's
# records come over a millisecond or so) instead of one record per wake-up.
# TH_WAKEUP_BYTES waiting (a flood) wakes the loop as well, and is read at once.
DRAIN_INTERVAL = 0.1
COALESCE_SECONDS = 0.02
# Records read per loop turn, in batches of BATCH_RECORDS (export/delivery.py).
TURN_RECORDS = 16 * BATCH_RECORDS


@dataclass
class Counters:
    records: int = 0
    decode_errors: int = 0
    events: dict[str, int] = field(default_factory=dict)   # by EventMeta.kind
    lost: dict[str, int] = field(default_factory=dict)     # in-kernel losses by record kind
    # records read (or found pinned) but not exported, by reason: unknown_hook
    # (its policy was unloaded meanwhile), replaced_generation (an older
    # build's ring buffer this build cannot decode)
    dropped: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


class Agent(PinnedState):
    delivery = None      # releases ring space as exporters write (tetrahost/export/delivery.py)
    _record_pos = 0      # the ring position after the record being handled (Event.pos)
    _replaced_reader = None     # a replaced generation's ring, while _drain_replaced reads it

    def __init__(self, sinks, node_name: str | None = None, proc_root: str = "/proc",
                 ringbuf_bytes: int | None = None, policy_files=(), features=None, components=(),
                 pin_dir: str = "", keep_pins: bool = False, export_hold: float = MAX_HOLD, config=None,
                 policy_state_file: str = ""):
        """sinks: objects with write_events(list[Event]) and close(), and
        `wants`, read by ThreadedSink: the Event forms they read on their own
        thread ("json", "data", "compact"; "json" when they do not say);
        features: the kernel's probed capabilities (probed when needed if None);
        components: objects with start(services) and stop(), started once the
        sensors and the policy files given here are in place (control socket,
        policy directory watch, metrics, sd_notify), stopped in reverse order;
        they get a runtime.services.Services;
        config: the Config (limits, and what components read at start; None: defaults);
        policy_state_file: where set-mode/enable/disable decisions are kept
        (runtime/overrides.py; "" = for this agent's life only);
        pin_dir: the bpffs directory of the pinned state ("" = none: everything
        goes with the process); keep_pins: an orderly exit leaves the pins
        (enforcing) instead of removing them; export_hold: seconds read records
        may wait for a stalled exporter (tetrahost/export/delivery.py)."""
        self.config = config
        self.policy_state_file = policy_state_file
        self.pin_dir = pin_dir
        self.keep_pins = keep_pins
        self.export_hold = export_hold
        self.pins = None
        self.dispatcher = None
        self._hold_ring = False          # True while adopting pinned hooks
        self._sensor_attached_ns = 0           # CLOCK_BOOTTIME when the process sensor attached
        self._superseded = 0                   # records of a replaced generation this agent also wrote
        self._losses_seen: dict[str, int] = {}    # loss counter totals read (no pins: see _check_losses)
        self._ready = False
        self.sinks = list(sinks)
        self.components = list(components)
        self.policy_files = list(policy_files)
        self.features = features
        self.policies = None
        self.user_actions = None         # DnsLookup/GetUrl worker (tetrahost.useractions), when needed
        self.node_name = node_name or socket.gethostname()
        self.proc_root = proc_root
        self.counters = Counters()
        self.cache = ProcessCache(self.node_name, cgroup_path_for=CgroupResolver().path_for)
        self.host_ns = HostNamespaces.from_proc(proc_root)
        self.renderer = TetragonJSON(self.node_name, self.host_ns)
        self.hook_renderer = HookEventRenderer(self.renderer, self.cache)
        self.enricher = Enricher(self.cache, self.renderer, self.hook_renderer, self._hook_for_record,
                                 self.counters.dropped, lambda action, target: self._user_actions().submit(
                                     action, target))
        self.ringbuf_bytes = ringbuf_bytes or DEFAULT_RINGBUF_BYTES
        # The ring is released as the exporters write, not as it is read: a pinned
        # ring then keeps, for the next agent, what a kill -9 caught in between.
        self.sensor = ProcessSensor(self._on_record, ringbuf_bytes=self.ringbuf_bytes, deferred=True)
        self._batch: list[Event] = []
        self._ring_behind = False              # the last drain stopped at TURN_RECORDS
        self._drain_due = math.inf             # monotonic time of the next drain (loop turns)
        self._started: list = []
        self.loop = EventLoop()
        self.loop.add_timer(LOSS_CHECK_INTERVAL, self._check_losses)
        self.status = StatusBoard(self._snapshot_inputs(), wake=self.loop.wake)

    def _snapshot_inputs(self) -> SnapshotInputs:
        from tetrahost.overhead import program_costs
        return SnapshotInputs(
            node_name=self.node_name, counters=self.counters, cache=self.cache,
            features=lambda: self.features,
            in_use=lambda: ["process sensor: " + ", ".join(p.section for p in self.sensor.obj.programs.values())],
            policies=lambda: self.policies, pins=lambda: self.pins,
            delivery=lambda: self.delivery,
            costs=lambda: program_costs(self.sensor, self.policies),
            sections={"user_actions": lambda: dict(self.user_actions.counts) if self.user_actions else {}})

    def services(self) -> Services:
        """What components get at start (after the policies are in place)."""
        return Services(loop=self.loop, status=self.status, exporters=Exporters(self.sinks),
                        node_name=self.node_name, config=self.config, policies=self.policies,
                        drain_events=self.drain_events)

    def _turn(self) -> float:
        """The agent's work each loop turn; returns the monotonic time it wants
        the next turn at: now while a flood waits, DRAIN_INTERVAL on while
        records come, inf once the ring is quiet and the programs will wake us."""
        now = time.monotonic()
        if self._ring_behind or now >= self._drain_due:
            read = self.drain_events()
            if self._ring_behind:
                self._drain_due = now
            elif read or not self.sensor.ringbuf.doze():
                self._drain_due = now + DRAIN_INTERVAL
            else:
                self._drain_due = math.inf
        self.status.end_turn()
        return self._drain_due

    def _on_ring_wake(self) -> None:
        """The programs woke the ring's readers: the first record after doze()
        (read once its burst has gathered) or TH_WAKEUP_BYTES waiting (read now)."""
        ring = self.sensor.ringbuf
        ring.clear_wake()
        now = time.monotonic()
        if ring.unread_bytes() >= TH_WAKEUP_BYTES:
            self._drain_due = now
        else:
            self._drain_due = min(self._drain_due, now + COALESCE_SECONDS)

    def drain_events(self) -> int:
        """Consume the ring buffer and hand the batch to the sinks; for long
        start-up work (policy loads) that runs before the loop does.  Returns
        the records read."""
        if getattr(self, "_hold_ring", False):
            return 0
        if self.delivery is not None:
            self.delivery.release_stale()
        read = 0
        self._ring_behind = False
        while read < TURN_RECORDS:
            if self.delivery is not None and self.delivery.backlogged(BATCH_RECORDS):
                return read     # the records wait in the ring; a write wakes the loop (_on_room)
            n = self._consume(BATCH_RECORDS)
            self._flush()
            read += n
            if n < BATCH_RECORDS:
                return read
        self._ring_behind = True        # more waiting: the next turn does not sleep
        return read

    def _on_room(self) -> None:
        """An exporter that was full wrote (its thread): read on at once."""
        self._drain_due = 0.0
        self.loop.wake()

    def _consume(self, limit: int) -> int:
        """Records read from the ring buffer (at most limit); a failure is logged."""
        ring = self.sensor.ringbuf
        try:
            return ring.consume(limit)
        except Exception:
            log.exception("event loop: reading the ring buffer failed")
            return 0
        finally:
            if ring.oversized:      # records no read buffer could hold, stepped over: counted
                self.counters.dropped["oversized"] = ring.oversized

    def handle_records(self, raws) -> None:
        """Kernel records (bytes each, as the ring buffer hands them) through the
        ring buffer's own callback, then to the sinks as one batch.  For
        replaying captured records (bench/pipeline.py): they have no ring
        position (Event.pos 0), so no delivery mark follows them."""
        for raw in raws:
            self._on_record(raw, 0)
        self._flush()

    # -- hot path: one call per kernel record ----------------------------------------
    def _on_record(self, raw: bytes, pos: int | None = None) -> None:
        """The ring buffer's callback.  pos: the ring position its events carry
        (default: just after the record the ring buffer handed over).

        _decode, _handle and _emit in one body: three calls less on every
        record of the host (offline replay of 3,000 exec cycles, loop
        thread: 11.8-11.9 -> 11.1-11.4 µs each)."""
        counters = self.counters
        counters.records += 1
        try:
            record = decode(raw)
        except DecodeError as exc:
            counters.decode_errors += 1
            log.warning("dropped a malformed kernel record: %s", exc)
            return
        event = self.enricher.event(record)
        if event is not None:
            kind = event.meta.kind
            counters.events[kind] = counters.events.get(kind, 0) + 1
            event.pos = self.sensor.ringbuf.record_end if pos is None else pos
            self._batch.append(event)

    def _decode(self, raw: bytes):
        self.counters.records += 1
        try:
            return decode(raw)
        except DecodeError as exc:
            self.counters.decode_errors += 1
            log.warning("dropped a malformed kernel record: %s", exc)
            return None

    def _handle(self, record) -> None:
        event = self.enricher.event(record)
        if event is not None:
            self._emit(event)

    def _hook_for_record(self, hook_id: int):
        return self.policies.hook_for_record(hook_id) if self.policies else None

    def _user_actions(self):
        """DnsLookup/GetUrl: a worker thread, started by the first such event."""
        if self.user_actions is None:
            from tetrahost.useractions import UserActions
            self.user_actions = UserActions()
        return self.user_actions

    def _emit(self, event: Event) -> None:
        kind = event.meta.kind
        self.counters.events[kind] = self.counters.events.get(kind, 0) + 1
        event.pos = self._record_pos
        self._batch.append(event)

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            # Each form is made on this thread when a sink first reads it, or as
            # an exporter queues the batch (events/event.py): none for a batch
            # every exporter drops.
            for sink in self.sinks:
                try:
                    sink.write_events(batch)
                except Exception:   # one failing exporter must not stop the others or the loop
                    log.exception("sink %s failed", getattr(sink, "name", sink))
            for event in batch:
                event.release()
        if self.delivery is not None:
            self.delivery.flushed()     # what was read so far is with the exporters

    def _check_losses(self) -> None:
        """Count what the in-kernel loss counters gained.  They are cumulative
        and, pinned, outlive agents: an adopting agent reports what is beyond
        what its predecessors reported (the manifest's losses_reported), so the
        losses while no agent ran are counted, and counted once."""
        reported = self.pins.losses_reported if self.pins is not None else self._losses_seen
        for kind, total in self.sensor.losses().items():
            new = total - reported.get(kind, 0)
            if new > 0:
                self._count_lost(kind, new)
                reported[kind] = total

    def _count_lost(self, kind: str, n: int, where: str = "") -> None:
        self.counters.lost[kind] = self.counters.lost.get(kind, 0) + n
        log.warning("ring buffer full: %d %s records lost in the kernel%s (%d by this agent)", n, kind, where,
                    self.counters.lost[kind])

    # -- policies ------------------------------------------------------------------
    def _start_policies(self) -> None:
        from tetrahost.runtime.manager import Limits, PolicyLoadFailed, PolicyManager

        # A component that manages policies at run time (the policy directory
        # watch) needs the manager even when no --policy file was given.
        # Adopted pins may hold hooks (dispatcher chains) only a manager can remove.
        adopting = self.pins is not None and self.pins.adopted
        if not self.policy_files and not adopting \
                and not any(getattr(c, "needs_policies", False) for c in self.components):
            return
        if self.features is None:
            from tetrahost.sensors.probe import kernel_features
            self.features = kernel_features()
        from tetrahost.sensors.procstate import ProcState

        from tetrahost.sensors.dispatch import SyscallDispatcher

        shared = {name: self.sensor.obj.map(name) for name in ("events", "losses", "ring_ctl", "socktrack",
                                                             "proc_state", "enforcer_notes")}
        self.dispatcher = SyscallDispatcher(shared, pins=self.pins)
        shared.update(self.dispatcher.maps)
        cfg = self.config
        limits = Limits(cfg.limits.max_hooks_per_policy, cfg.limits.max_hooks_total) if cfg is not None else None
        from tetrahost.runtime.overrides import PolicyOverrides
        self.policies = PolicyManager(self.features, self.host_ns, shared,
                                      ProcState(self.sensor.obj, self.cache.running, self.proc_root), limits,
                                      dispatcher=self.dispatcher, pins=self.pins,
                                      overrides=PolicyOverrides(self.policy_state_file or None))
        self.loop.add_timer(1.0, self.policies.retry_failed)    # hooks that failed for want of fds/memory
        from tetrahost.runtime.binwatch import BinaryWatch
        self.components.append(BinaryWatch())    # uprobe/USDT hooks follow a replaced binary
        for path in self.policy_files:
            try:
                self.policies.load_file(path)
            except PolicyLoadFailed as exc:
                log.error("%s", exc)

    # -- lifecycle -----------------------------------------------------------------
    def run(self) -> int:
        raise_fd_limit()
        ensure_mounted()
        loop = self.loop
        old_wakeup = signal.set_wakeup_fd(loop.wake_w)
        old_handlers = {s: signal.signal(s, loop.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            # Attach before scanning /proc: a process started in between is then
            # in the ring buffer, not lost between the scan and the attach.
            self._open_pins()
            self.sensor.start(self.pins)
            self._sensor_attached_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            self.delivery = Delivery(self.sensor.ringbuf, self.sinks, max_hold=self.export_hold,
                                     max_bytes=self.ringbuf_bytes // 2,
                                     marks=DeliveryMarks(self.sensor.obj.map("delivered").fd))
            self.delivery.on_room = self._on_room
            loaded = self.cache.load_procfs(self.proc_root)
            self._start_policies()
            services = self.services()
            for component in self.components:
                component.start(services)
                self._started.append(component)
            self._finish_pins()
            self._catch_up()
            self._ready = True
            if self.policies is not None:
                self.policies.pool.resume()     # spares for reloads, now that start-up is done
            log.info("tetrahost ready: node %s, %d processes from %s, process sensor attached",
                     self.node_name, loaded, self.proc_root)
            ring = self.sensor.ringbuf
            ring.sleep_flag(self.sensor.obj.map("ring_ctl"))
            self._drain_due = time.monotonic()      # read what waits, then doze when it is quiet
            loop.add_reader(ring.wake_fd, self._on_ring_wake)
            loop.run(self._turn)
        finally:
            for component in reversed(self._started):
                try:
                    component.stop()
                except Exception:
                    log.exception("stopping %s failed", component)
            self._hold_ring = False
            if self._ready:     # the last reading of the loss counters, for the stop line
                self.loop.guarded(self._check_losses, "reading the loss counters")
            self._shutdown_kernel_side()
            self._flush()
            for sink in self.sinks:
                sink.close()
            if self.delivery is not None:
                self.delivery.settle()      # release what the exporters wrote while closing
            self.sensor.close_ring()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            loop.close()
        log.info("tetrahost stopped: %d records, %s; longest loop turn %.3f s; %s", self.counters.records,
                 self.counters.events, loop.longest_turn, self.loss_summary())
        return 0

    def loss_summary(self) -> str:
        """What this agent lost, by where and why ("lost: none" or "lost: N (...)"):
        its metrics go with the process, so the stop line keeps the count of an
        agent a restart replaces."""
        parts = [(f"kernel {kind}", n) for kind, n in self.counters.lost.items()]
        parts += [(f"dropped {reason}", n) for reason, n in self.counters.dropped.items()]
        for sink in self.sinks:
            stats = getattr(sink, "stats", None)
            for reason, n in (getattr(stats, "lost_by_reason", None) or {}).items():
                parts.append((f"{getattr(sink, 'name', 'sink')} {reason}", n))
        parts = [(what, n) for what, n in parts if n]
        if not parts:
            return "lost: none"
        return f"lost: {sum(n for _, n in parts)} ({', '.join(f'{what} {n}' for what, n in parts)})"
