"""One immutable picture of the agent per loop turn, for everyone who reports on it.

`tetra status` and `tracingpolicy list` (control socket), sd_notify's STATUS=
line and the Prometheus collector all read an AgentSnapshot instead of the
live objects: those belong to the event loop, which replaces policies and
bumps counters while they are read.  A snapshot is taken on the loop's
thread, at most once per turn and only when somebody asks (StatusBoard.now()
on the loop thread; StatusBoard.fresh() from another thread, which wakes the
loop and waits for the turn's end), so an idle agent pays nothing for it.

Everything in it is a copy: tuples, frozen records, mappings nobody else
holds.  The BPF programs' run statistics (a syscall per program) are read
only for the metrics collector, which asks for them.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

EMPTY: Mapping = MappingProxyType({})


def frozen(d: dict | None) -> Mapping:
    return MappingProxyType(dict(d)) if d else EMPTY


@dataclass(frozen=True)
class PolicyView:
    """One loaded policy as the manager described it at snapshot time."""
    name: str
    file: str
    state: str
    mode: str
    generation: int
    loaded_at: float
    events: int
    hooks: tuple                 # one dict per hook (PolicyManager.describe), copies
    fallbacks: tuple[str, ...]   # hooks running on a lesser method because a better one failed here
    reattached: tuple[str, ...]  # uprobe/USDT hooks that followed a replaced binary


@dataclass(frozen=True)
class AgentSnapshot:
    taken: float                           # time.monotonic() when taken
    pid: int
    node_name: str
    started: float                         # wall time the agent started
    kernel_release: str
    features: Mapping
    in_use: tuple[str, ...]                # attached BPF programs, "section: method"
    records: int
    decode_errors: int
    events: Mapping                        # by event kind
    lost: Mapping                          # in-kernel losses by record kind
    dropped: Mapping                       # read but not exported, by reason
    released_unwritten: int                # ring space given up before a stalled exporter wrote
    reading_paused: int                    # loop turns the ring was left unread: an exporter's queue was full
    reading_overruns: int                  # turns read on although one was full: the ring was filling
    cache_size: int
    policies: tuple[PolicyView, ...]
    policy_reloads: Mapping                # ok / failed / unloads (empty: no policy manager)
    policy_errors: Mapping                 # file -> why it did not load
    pinned: Mapping | None                 # tetrahost/sensors/pins.py state, None without pins
    sections: Mapping                      # name -> what a component reported (control, policy_dir, ...)
    program_costs: tuple                   # overhead.ProgramCost, when asked for (has_costs)
    has_costs: bool

    @property
    def degraded(self) -> bool:
        # a policy the operator disabled is not a fault; one that lost hooks is
        return bool(self.policy_errors) or any(p.state not in ("enforcing", "monitoring", "disabled")
                                               for p in self.policies)


@dataclass
class SnapshotInputs:
    """Where a snapshot is read from: the agent's own state, handed over explicitly."""
    node_name: str
    counters: object                        # daemon.Counters
    cache: object                           # events.proccache.ProcessCache (len)
    features: Callable[[], object]
    in_use: Callable[[], list[str]]
    policies: Callable[[], object]          # the PolicyManager or None
    pins: Callable[[], object]              # the PinStore or None
    delivery: Callable[[], object]          # export.delivery.Delivery, None before the ring is open
    costs: Callable[[], list]               # overhead.program_costs of the live programs
    sections: dict[str, Callable[[], object]] = field(default_factory=dict)


def take(src: SnapshotInputs, with_costs: bool = False) -> AgentSnapshot:
    import dataclasses
    c = src.counters
    manager = src.policies()
    features = src.features()
    delivery = src.delivery()
    if features is None:
        feats = {}
    elif dataclasses.is_dataclass(features):
        feats = dataclasses.asdict(features)
    else:
        feats = {k: v for k, v in vars(features).items() if not k.startswith("_")}
    policies: tuple[PolicyView, ...] = ()
    in_use = list(src.in_use())
    if manager is not None:
        described = {d["name"]: d for d in manager.describe()}
        views = []
        for name, s in sorted(manager.policies.items()):
            d = described[name]
            views.append(PolicyView(
                name=name, file=d["file"], state=d["state"], mode=d["mode"], generation=d["generation"],
                loaded_at=d["loaded_at"], events=d["events"], hooks=tuple(d["hooks"]),
                fallbacks=tuple(f"{h.hook.describe()}: {h.plan.method}" for h in s.hooks
                                if h.active and h.fallback_from),
                reattached=tuple(f"{h.hook.describe()}: re-attached {h.reattached} time(s) after "
                                 f"{h.hook.path} changed" + ("" if h.active else f"; now NOT ACTIVE: {h.error}")
                                 for h in s.hooks if h.binary_changed_at is not None)))
        policies = tuple(views)
        in_use += sorted({f"{h.plan.program}: {h.plan.method}" for h in manager.hooks.values() if h.active})
    r = getattr(manager, "reloads", None)
    return AgentSnapshot(
        taken=time.monotonic(), pid=os.getpid(), node_name=src.node_name, started=c.started,
        kernel_release=os.uname().release, features=frozen(feats), in_use=tuple(in_use),
        records=c.records, decode_errors=c.decode_errors, events=frozen(c.events), lost=frozen(c.lost),
        dropped=frozen(c.dropped), cache_size=len(src.cache),
        released_unwritten=getattr(delivery, "forced", 0), reading_paused=getattr(delivery, "paused", 0),
        reading_overruns=getattr(delivery, "overruns", 0),
        policies=policies,
        policy_reloads=frozen({"ok": r.ok, "failed": r.failed, "unloads": r.unloads}) if r is not None else EMPTY,
        policy_errors=frozen(manager.errors) if manager is not None else EMPTY,
        pinned=_pinned(src.pins(), manager),
        sections=MappingProxyType({name: read() for name, read in src.sections.items()}),
        program_costs=tuple(src.costs()) if with_costs else (), has_costs=with_costs)


def _pinned(pins, manager) -> Mapping | None:
    """The pinned state (docs/pinning.md): adopted vs fresh hooks, orphan pins."""
    if pins is None:
        return None
    hooks = [h for s in (manager.policies.values() if manager else ()) for h in s.hooks if h.active]
    return frozen({"pin_dir": pins.root, "generation": pins.generation, "adopted": pins.adopted,
                   "problem": pins.problem,
                   "hooks_adopted": sum(h.origin == "adopted" for h in hooks),
                   "hooks_fresh": sum(h.origin == "fresh" for h in hooks),
                   "hooks_unpinned": sum(not h.pinned for h in hooks),
                   "orphans": tuple(pins.orphans({h.hook_id for h in hooks if h.pinned}))})


class StatusBoard:
    """The current snapshot: taken on the loop's thread, read from any thread."""

    def __init__(self, inputs: SnapshotInputs, wake: Callable[[], None] = lambda: None):
        self.inputs = inputs
        self._wake = wake                  # ends the loop's wait (EventLoop.wake)
        self._current: AgentSnapshot | None = None
        self._this_turn = False            # _current was taken during the current turn
        self._cond = threading.Condition()
        self._asked = 0                    # requests from other threads, numbered
        self._asked_costs = False
        self._served = 0                   # the last request a published snapshot was taken after

    def add_section(self, name: str, read: Callable[[], object]) -> None:
        """A component's own part of the status (read on the loop's thread)."""
        self.inputs.sections[name] = read

    def now(self) -> AgentSnapshot:
        """On the loop's thread: this turn's snapshot, taken on first use."""
        if self._current is None or not self._this_turn:
            self._publish(take(self.inputs))
        return self._current

    def retake(self) -> AgentSnapshot:
        """On the loop's thread, after a change made during this turn (a policy added)."""
        self._this_turn = False
        return self.now()

    def end_turn(self) -> None:
        """The loop's turn is over: serve the other threads' requests, then forget the turn."""
        if self._asked > self._served:
            with self._cond:
                serving, costs, self._asked_costs = self._asked, self._asked_costs, False
            snap = take(self.inputs, with_costs=costs)
            with self._cond:
                self._publish(snap)
                self._served = serving
                self._cond.notify_all()
        self._this_turn = False

    def fresh(self, timeout: float = 2.0, costs: bool = False) -> AgentSnapshot | None:
        """From another thread: a snapshot taken after this call (the loop is
        woken for it), or, should the loop not turn within `timeout`, the
        latest one (None before the first)."""
        with self._cond:
            self._asked += 1
            mine = self._asked
            self._asked_costs |= costs
        self._wake()
        with self._cond:
            self._cond.wait_for(lambda: self._served >= mine, timeout)
            return self._current

    def _publish(self, snap: AgentSnapshot) -> None:
        self._current = snap
        self._this_turn = True
