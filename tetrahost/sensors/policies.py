"""Loaded TracingPolicies and the kernel hooks that enforce them.

Each policy file is validated as a whole (a broken file loads nothing and
says why); each hook of a valid policy is then compiled, planned and attached
on its own: a hook the kernel cannot honour is reported with the reason while
the policy's other hooks, and every other policy, keep working.

A file is also the unit of replacement (`apply_file`): the new version's
hooks are attached under fresh hook ids BEFORE the old ones are detached, so
enforcement never has a gap.  Retired hook states stay in `hooks` for
RETIRE_GRACE seconds: records the old programs put in the ring buffer just
before they were detached still find their policy and render (the daemon
looks records up by hook id).  A replacement that does not validate, names a
policy another file owns, or has a hook that fails to attach is rolled back
and the old version keeps running.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace

from tetrahost.bpf import BpfError, BpfObject
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy.compile import CompiledHook, CompileError, compile_hook
from tetrahost.policy.load import LoadResult, load_path, load_text
from tetrahost.policy.model import Hook, Policy
from tetrahost.sensors.attach import AttachError, AttachPlan, candidates_compiled
from tetrahost.sensors.fallback import start_hook
from tetrahost.sensors.generic import _TRAMPOLINE_PROGRAMS, HookSensor, load_hook_object

log = logging.getLogger(__name__)

RETIRE_GRACE = 5.0   # seconds a detached hook's id still resolves (records in flight)


@dataclass
class HookState:
    hook_id: int
    policy: Policy
    hook: Hook
    compiled: CompiledHook | None = None
    plan: AttachPlan | None = None
    sensor: HookSensor | None = None
    error: str = ""
    events: int = 0
    retired_at: float | None = None      # monotonic time it was detached by a replace/unload
    proc_bits: list[int] | None = None   # holds the per-process state (ProcState.acquire)
    fallback_from: list[str] = field(default_factory=list)   # better methods that failed, with why

    @property
    def active(self) -> bool:
        return self.sensor is not None

    def describe(self) -> str:
        where = f"{self.hook.describe()}"
        return f"{where}: {self.plan.method}" if self.active else f"{where}: NOT ACTIVE: {self.error}"


@dataclass
class PolicyState:
    policy: Policy
    hooks: list[HookState] = field(default_factory=list)
    generation: int = 1                  # 1 + number of successful replaces
    loaded_at: float = field(default_factory=time.time)

    @property
    def state(self) -> str:
        active = sum(h.active for h in self.hooks)
        if active == len(self.hooks):
            return "monitoring" if self.policy.mode == "monitor" else "enforcing"
        return "partial" if active else "error"

    @property
    def file(self) -> str:
        return self.policy.file


class PolicyLoadFailed(Exception):
    def __init__(self, file: str, messages: list[str], name_conflict: bool = False):
        """name_conflict: rejected because another file owns a policy name (the
        policy directory retries such a file when the owner goes away)."""
        self.file = file
        self.messages = messages
        self.name_conflict = name_conflict
        super().__init__(f"{file}: policy rejected:\n  " + "\n  ".join(messages))


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
        return tuple((program, target if program in _TRAMPOLINE_PROGRAMS else "")
                     for program, target in plan.programs)

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


@dataclass
class ReloadCounters:
    ok: int = 0          # files applied (first load or replace)
    failed: int = 0      # files rejected or rolled back (the old version, if any, kept)
    unloads: int = 0


class PolicyManager:
    def __init__(self, features, host_ns: HostNamespaces, shared_maps: dict, proc_state=None):
        """proc_state: the process sensor's ProcState (tetrahost.sensors.procstate),
        for the selectors that need per-process state; without it they are
        reported not active."""
        self.proc_state = proc_state
        self.features = features
        self.host_ns = host_ns
        self.shared_maps = shared_maps
        self.policies: dict[str, PolicyState] = {}
        self.hooks: dict[int, HookState] = {}       # live and recently retired, by hook id
        self.reloads = ReloadCounters()
        self.errors: dict[str, list[str]] = {}      # file -> messages of its last failed load
        self._ids = itertools.count(1)
        self.pool = WarmPool(shared_maps, depth=spares_per_key())

    # -- queries -----------------------------------------------------------------------
    def names_from(self, path: str) -> list[str]:
        """Names of the loaded policies that came from `path`."""
        return [n for n, s in self.policies.items() if s.file == path]

    # -- load / replace ------------------------------------------------------------------
    def load_file(self, path: str) -> list[PolicyState]:
        """Validate and attach every policy of a file; PolicyLoadFailed if the file is invalid."""
        return self.apply_file(path, replace=False)

    def apply_file(self, path: str, text: str | None = None, replace: bool = True,
                   parsed: LoadResult | None = None) -> list[PolicyState]:
        """Load `path` (its content `text` if given, so the caller's read is what loads),
        replacing what the same file loaded before.  Raises PolicyLoadFailed and
        leaves the running version untouched when the new one is not usable.
        parsed: load_text(text, file=path) when the caller has it already (the
        policy directory checks a file before writing it), so it is not parsed again."""
        self.purge_retired()
        try:
            states = self._apply(path, text, replace, parsed)
        except PolicyLoadFailed as exc:
            self.reloads.failed += 1
            self.errors[path] = exc.messages
            raise
        self.reloads.ok += 1
        self.errors.pop(path, None)
        return states

    def _apply(self, path: str, text: str | None, replace: bool, parsed: LoadResult | None) -> list[PolicyState]:
        result = parsed or (load_path(path) if text is None else load_text(text, file=path))
        if not result.ok:
            raise PolicyLoadFailed(path, [e.render() for e in result.errors])
        for w in result.warnings:
            log.warning("%s", w.render())
        self._check_names(path, result, replace)
        old = {n: self.policies[n] for n in self.names_from(path)} if replace else {}
        new = [self._start_policy(p) for p in result.policies]
        failed = [(s, h) for s in new for h in s.hooks if not h.active]
        if failed and any(h.active for s in old.values() for h in s.hooks):
            # Never trade a running version for one that enforces less.
            for s in new:
                self._retire(s)
            raise PolicyLoadFailed(path, [f"policy {s.policy.name}: {h.hook.describe()} could not be attached: "
                                          f"{h.error}; the previous version keeps running" for s, h in failed])
        # Commit: the new hooks are attached; only now detach the old ones.
        for s in new:
            prev = old.get(s.policy.name)
            if prev is not None:
                s.generation = prev.generation + 1
            self.policies[s.policy.name] = s
        for name, prev in old.items():
            self._retire(prev)
            if name not in {s.policy.name for s in new}:
                del self.policies[name]
                log.info("policy %s: removed (no longer in %s)", name, path)
        if old:
            log.info("policy file %s: replaced (%s)", path, ", ".join(s.policy.name for s in new))
        return new

    def _check_names(self, path: str, result: LoadResult, replace: bool) -> None:
        problems = []
        for p in result.policies:
            owner = self.policies.get(p.name)
            if owner is not None and (not replace or owner.file != path):
                problems.append(f'policy "{p.name}" is defined in both {owner.file} and {path}; '
                                f"{path} is not loaded")
        if problems:
            raise PolicyLoadFailed(path, problems, name_conflict=True)

    def _start_policy(self, policy: Policy) -> PolicyState:
        state = PolicyState(policy)
        for hook in policy.hooks:
            hs = HookState(next(self._ids), policy, hook)
            state.hooks.append(hs)
            self.hooks[hs.hook_id] = hs
            try:
                hs.compiled = compile_hook(hook, hs.hook_id, self.host_ns, monitor=policy.mode == "monitor")
                candidates = candidates_compiled(hook, hs.compiled, self.features)
                hs.plan = candidates[0]
                self._acquire_proc_state(hs)
                # the first method that loads and attaches; spares are tried first
                started = start_hook(hs.compiled, candidates, self.shared_maps, self.pool.take)
                hs.sensor, hs.plan, hs.fallback_from = started.sensor, started.plan, started.failed
                if hs.sensor.skipped:     # a list hook attached to fewer functions than planned
                    hs.plan = replace(hs.plan, method=f"{hs.plan.method}; {len(hs.sensor.skipped)} "
                                      f"would not attach: {'; '.join(hs.sensor.skipped[:3])}")
                self.pool.refill(self.pool.key(hs.plan))    # after our own load (and start-up)
            except (CompileError, AttachError, BpfError) as exc:
                # BpfError's text is one line plus the verifier's last lines:
                # the reason, on one line for status/list output
                self._release_proc_state(hs)
                hs.error = " | ".join(line.strip() for line in str(exc).splitlines())
                log.error("policy %s (%s): %s not active: %s", policy.name, policy.file, hook.describe(), hs.error)
                if isinstance(exc, BpfError) and exc.log:
                    log.debug("verifier log:\n%s", exc.full_log)
            else:
                log.info("policy %s: %s", policy.name, hs.describe())
        return state

    def _acquire_proc_state(self, hs: HookState) -> None:
        if not hs.compiled.needs_proc_state:
            return
        if self.proc_state is None:
            raise CompileError("matchCapabilityChanges, matchNamespaceChanges and matchBinaries "
                               "followChildren need the process sensor's per-process state, not "
                               "available to this policy manager")
        hs.proc_bits = self.proc_state.acquire(hs.compiled)

    def _release_proc_state(self, hs: HookState) -> None:
        if hs.proc_bits is not None:
            self.proc_state.release(hs.proc_bits)
            hs.proc_bits = None

    # -- unload --------------------------------------------------------------------------
    def _retire(self, state: PolicyState) -> None:
        now = time.monotonic()
        for hs in state.hooks:
            if hs.sensor is not None:
                hs.sensor.stop()
                hs.sensor = None
            self._release_proc_state(hs)
            hs.retired_at = now

    def unload(self, name: str) -> None:
        state = self.policies.pop(name)
        self._retire(state)
        self.reloads.unloads += 1

    def unload_file(self, path: str) -> list[str]:
        names = self.names_from(path)
        for name in names:
            self.unload(name)
        self.errors.pop(path, None)
        return names

    def purge_retired(self, now: float | None = None) -> None:
        """Forget retired hook ids older than RETIRE_GRACE (called from a timer)."""
        now = time.monotonic() if now is None else now
        for hook_id in [i for i, h in self.hooks.items()
                        if h.retired_at is not None and now - h.retired_at > RETIRE_GRACE]:
            del self.hooks[hook_id]

    def stop_all(self) -> None:
        for name in list(self.policies):
            self.unload(name)
        self.pool.close()

    # -- reporting -----------------------------------------------------------------------
    def describe(self) -> list[dict]:
        """Plain data for status / tracingpolicy list."""
        out = []
        for name, s in sorted(self.policies.items()):
            out.append({
                "name": name, "file": os.fspath(s.file), "state": s.state, "mode": s.policy.mode,
                "generation": s.generation, "loaded_at": s.loaded_at,
                "events": sum(h.events for h in s.hooks),
                "hooks": [{"id": h.hook_id, "hook": h.hook.describe(), "active": h.active,
                           "attach": h.plan.method if h.plan is not None and h.active else "",
                           "error": h.error, "events": h.events,
                           "fallback_from": h.fallback_from if h.active else []} for h in s.hooks],
            })
        return out
