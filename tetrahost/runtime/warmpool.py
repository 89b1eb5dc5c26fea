"""Spare, already verified hook objects, so a policy reload only fills maps and attaches."""
from __future__ import annotations

import logging
import os
import threading

from tetrahost.bpf import BpfObject
from tetrahost.sensors.attach import AttachPlan
from tetrahost.sensors.generic import TRAMPOLINE_PROGRAMS, load_hook_object

log = logging.getLogger(__name__)

SPARES_ENV = "TETRAHOST_POLICY_SPARES"


def spares_per_key() -> int:
    """Verified spare objects kept per hook kind (default 2).  0 turns the
    pool off: on an emulated CPU (the tests' QEMU guest) each spare costs tens
    of seconds of verifier time in the background, more than a reload saves."""
    try:
        return max(0, int(os.environ.get(SPARES_ENV, "2")))
    except ValueError:
        log.warning("%s=%r is not a number: using 2", SPARES_ENV, os.environ.get(SPARES_ENV))
        return 2


class WarmPool:
    """Spare, already verified copies of generic.bpf.o, one per (program, target).

    The verifier takes ~0.5 s for generic.bpf.o, which would be the whole of a
    reload's latency and would stall the agent's loop.  Nothing the verifier
    sees depends on the policy (selectors live in maps, filled after load), so
    a spare object can be loaded ahead of time in a thread (cffi releases the
    GIL around bpf_object__load) and a reload only fills maps and attaches.
    After a spare is taken another is loaded for the next reload.
    """

    def __init__(self, shared_maps: dict, depth: int = 2):
        self.shared = shared_maps
        self.depth = depth                                   # spares kept per key
        self._ready: dict[tuple, list[BpfObject]] = {}
        self._loading: dict[tuple, threading.Thread] = {}   # one loader thread per key
        self._lock = threading.Condition()                  # notified when a spare is ready
        self._closed = False
        # Until resume(): keys to fill later.  Spares are for reloads; loading
        # them while the agent starts would compete with its own first loads.
        self._deferred: set[tuple] | None = set()

    def resume(self) -> None:
        """Start filling: the agent is up (called once its first policies are loaded)."""
        with self._lock:
            keys, self._deferred = self._deferred or set(), None
        for key in keys:
            self.refill(key)

    @staticmethod
    def key(plan: AttachPlan) -> tuple:
        """What the verified object depends on: its programs and, for
        trampoline programs, their targets (fixed at load)."""
        return tuple((program, target if program in TRAMPOLINE_PROGRAMS else "")
                     for program, target in plan.programs)

    def would_wait(self, plan: AttachPlan) -> bool:
        """True while take(plan) would wait for a spare being loaded; starts
        loading one if none is ready.  The policy manager's steps poll this
        so that the verifier runs in the pool's thread, not in the agent's loop."""
        key = self.key(plan)
        self.refill(key)
        with self._lock:
            return not self._ready.get(key) and key in self._loading

    def take(self, plan: AttachPlan) -> BpfObject | None:
        key = self.key(plan)
        with self._lock:
            # a spare on its way comes sooner than a load of our own (which would
            # also compete with it for the CPU)
            self._lock.wait_for(lambda: self._ready.get(key) or key not in self._loading)
            spares = self._ready.get(key)
            return spares.pop() if spares else None

    def refill(self, key: tuple) -> None:
        with self._lock:
            if self.depth == 0:
                return
            if self._deferred is not None:
                self._deferred.add(key)
                return
            if self._closed or key in self._loading or len(self._ready.get(key, ())) >= self.depth:
                return
            t = self._loading[key] = threading.Thread(target=self._fill, args=(key,), daemon=True,
                                                      name=f"warm-{key[0][0]}")
        t.start()

    def _fill(self, key: tuple) -> None:
        while True:
            obj = self._load(key)
            with self._lock:
                if obj is None or self._closed:
                    self._loading.pop(key, None)
                    self._lock.notify_all()
                    break
                spares = self._ready.setdefault(key, [])
                spares.append(obj)
                obj = None
                self._lock.notify_all()
                if len(spares) >= self.depth:
                    self._loading.pop(key, None)
                    return
        if obj is not None:
            obj.close()

    def _load(self, key: tuple) -> BpfObject | None:
        try:
            return load_hook_object(key, self.shared)
        except Exception as exc:     # the synchronous path will report the real error
            log.debug("warm pool: loading %s failed: %s", key, exc)
            return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._loading.values())
        for t in threads:           # at most one load each: a thread checks _closed between loads
            t.join()
        with self._lock:
            for spares in self._ready.values():
                for obj in spares:
                    obj.close()
            self._ready.clear()
