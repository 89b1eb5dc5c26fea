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

A load runs in steps (begin_apply -> ApplyJob.step(): the parse, then one
hook per step, committed after the last), so the agent's loop serves its
ring buffer and timers between hooks; whatever a step raises ends the job
as PolicyLoadFailed naming the file.  limits.max_hooks_per_policy/_total
are checked before anything is attached.  A hook that fails for want of fds
or memory (EMFILE, ENFILE, ENOMEM) is attached again later (retry_failed).

With a PinStore (pins=) every attached hook is pinned and the manifest kept
up to date, and a file whose pinned version is exactly what would be loaded
is adopted instead (tetrahost/runtime/adoption.py); finish_start() then
removes what no loaded file claimed.
"""
from __future__ import annotations

import errno
import itertools
import logging
import time
from dataclasses import replace

from tetrahost.bpf import BpfError
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy.compile import CompileError, compile_hook
from tetrahost.policy.errors import PolicyError
from tetrahost.policy.load import LoadResult, load_text, read_policy_file
from tetrahost.policy.model import Hook, Policy
from tetrahost.runtime import adoption
from tetrahost.runtime.admission import as_overridden, check_limits, check_names
from tetrahost.runtime.apply import ApplyJob
from tetrahost.runtime.overrides import PolicyOverrides
from tetrahost.runtime.state import (HookState, Limits, PolicyLoadFailed, PolicyState,  # noqa: F401 (re-exported)
                                     ReloadCounters, describe_policies)
from tetrahost.runtime.warmpool import WarmPool, spares_per_key
from tetrahost.sensors.attach import AttachError, candidates_compiled, plan_compiled
from tetrahost.sensors.fallback import start_hook
from tetrahost.tracefs import event_fields

log = logging.getLogger(__name__)

RETIRE_GRACE = 5.0   # seconds a detached hook's id still resolves (records in flight)
# A hook that fails for want of fds or (kernel) memory is not broken: it is
# attached again after RETRY_FIRST, 2x, 4x ... up to RETRY_MAX seconds.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
RETRY_FIRST = 1.0
RETRY_MAX = 60.0
SPARE_POLL = 0.01    # seconds between looks at a spare object being verified for a load


class PolicyManager:
    def __init__(self, features, host_ns: HostNamespaces, shared_maps: dict, proc_state=None,
                 limits: Limits | None = None, dispatcher=None, pins=None, overrides: PolicyOverrides | None = None):
        """proc_state: the process sensor's ProcState (tetrahost.sensors.procstate),
        for the selectors that need per-process state; without it they are
        reported not active.  dispatcher: the SyscallDispatcher that runs the
        syscall-fallback hooks (its maps among shared_maps); pins: the PinStore
        hooks are pinned into (None: they go with the agent); overrides: the
        operator's set-mode/disable decisions (runtime/overrides.py), applied
        to every policy loaded."""
        self.limits = limits or Limits()
        self.overrides = overrides or PolicyOverrides()
        self._reserved: dict[str, int] = {}        # file -> hooks of its load in progress
        self.proc_state = proc_state
        self.dispatcher = dispatcher
        self.features = features
        self.host_ns = host_ns
        self.shared_maps = shared_maps
        self.policies: dict[str, PolicyState] = {}
        self.hooks: dict[int, HookState] = {}       # live and recently retired, by hook id
        self.reloads = ReloadCounters()
        self.errors: dict[str, list[str]] = {}      # file -> messages of its last failed load
        self.pins = pins
        # path -> manifest entry of a previous agent's pinned version, until
        # adopted or dropped (finish_start drops the ones no file claimed)
        self.pinned_files: dict[str, dict] = pins.pinned_files() if pins is not None else {}
        # hook ids of a replaced generation (another build) -> what replaces them (hook_for_record)
        self._replaced_ids = pins.replaced_hooks() if pins is not None else {}
        taken = {h["id"] for e in self.pinned_files.values() for p in e["policies"] for h in p["hooks"]}
        if pins is not None:
            taken |= pins.pinned_hook_ids() | {pins.hook_ids_used}
        # hook ids go into records: never reuse one whose records may still be
        # read (a pinned hook's, a replaced generation's: PinStore.highest_hook_id)
        self._ids = itertools.count(max(taken, default=0) + 1)
        self.pool = WarmPool(shared_maps, depth=spares_per_key())

    # -- queries -----------------------------------------------------------------------
    def hook_for_record(self, hook_id: int) -> "HookState | None":
        """The hook a kernel record names: a live or recently retired one, or
        for a record a replaced generation's program wrote (read when it is
        drained), the same hook of the same, unchanged file loaded now."""
        hs = self.hooks.get(hook_id)
        if hs is not None or hook_id not in self._replaced_ids:
            return hs
        path, digest, name, index = self._replaced_ids[hook_id]
        state = self.policies.get(name)
        if state is None or state.file != path or state.digest != digest or index >= len(state.hooks):
            return None
        return state.hooks[index]

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
        return self.begin_apply(path, text, replace, parsed).wait()

    def begin_apply(self, path: str, text: str | None = None, replace: bool = True,
                    parsed: LoadResult | None = None) -> "ApplyJob":
        """apply_file in steps: the job's step() does one hook at a time, so the
        agent's loop can serve its ring buffer and timers between them."""
        self.purge_retired()
        return ApplyJob(self, path, self._apply_steps(path, text, replace, parsed))

    def _finished(self, job: "ApplyJob") -> None:
        if job.error is None:
            self.reloads.ok += 1
            self.errors.pop(job.path, None)
        else:
            self.reloads.failed += 1
            self.errors[job.path] = job.error.messages

    def _apply_steps(self, path: str, text: str | None, replace: bool, parsed: LoadResult | None):
        """A generator: yields after the parse and after each hook; returns the new states."""
        if text is None and parsed is None:
            try:
                text = read_policy_file(path)
            except PolicyError as exc:
                raise PolicyLoadFailed(path, [exc.render()]) from None
        result = parsed or load_text(text, file=path)
        digest = adoption.digest_of(text) if text is not None else ""
        if not result.ok:
            raise PolicyLoadFailed(path, [e.render() for e in result.errors])
        result = as_overridden(result, self.overrides)
        for w in result.warnings:
            log.warning("%s", w.render())
        check_names(self.policies, path, result, replace)
        check_limits(self.limits, self.policies, self._reserved, path, result, replace)
        if path in self.pinned_files and not self.names_from(path):
            adopted = adoption.adopt_file(self, path, digest, result)
            if adopted is not None:
                for s in adopted:
                    self.policies[s.policy.name] = s
                self._write_manifest()
                return adopted
        self._reserved[path] = sum(len(p.hooks) for p in result.policies)
        new: list[PolicyState] = []
        try:
            yield
            for p in result.policies:
                state = PolicyState(p, digest=digest, disabled=not self.overrides.enabled(p.name))
                new.append(state)
                for hook in (() if state.disabled else p.hooks):
                    hs = self._prepare_hook(p, hook)
                    while hs.plan is not None and self.pool.would_wait(hs.plan):
                        yield SPARE_POLL     # the pool's thread verifies; the loop runs meanwhile
                    self._attach(hs)
                    state.hooks.append(hs)
                    yield
            check_names(self.policies, path, result, replace)     # a name may have been taken meanwhile
            old = {n: self.policies[n] for n in self.names_from(path)} if replace else {}
            failed = [(s, h) for s in new for h in s.hooks if not h.active]
            if failed and any(h.active for s in old.values() for h in s.hooks):
                # Never trade a running version for one that enforces less.
                raise PolicyLoadFailed(path, [f"policy {s.policy.name}: {h.hook.describe()} could not be "
                                              f"attached: {h.error}; the previous version keeps running"
                                              for s, h in failed],
                                       retryable=any(h.retry_at is not None for _, h in failed))
        except BaseException:       # rejected, cancelled or broken: nothing of the new version stays
            for s in new:
                self._retire(s)
            raise
        finally:
            self._reserved.pop(path, None)
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
        if self.pins is not None:
            adoption.drop_pinned(self, path)     # a previous agent's version: after the new one is attached
            self._write_manifest()
        return new

    def _prepare_hook(self, policy: Policy, hook: Hook) -> HookState:
        """A new hook state with its attach plan when the hook compiles (the
        plan says which verified object it needs); _attach reports any failure."""
        hs = HookState(self._new_hook_id(), policy, hook)
        self.hooks[hs.hook_id] = hs
        try:
            hs.compiled = compile_hook(hook, hs.hook_id, self.host_ns, monitor=policy.mode == "monitor",
                                       tracepoint_fields=event_fields)
            hs.plan = plan_compiled(hook, hs.compiled, self.features)
        except Exception:
            hs.compiled = hs.plan = None
        return hs

    def _attach(self, hs: HookState) -> None:
        """Compile, plan and attach one hook; on failure hs.error says why (and,
        for a shortage of fds or memory, when it is tried again)."""
        policy, hook = hs.policy, hs.hook
        try:
            if hs.compiled is None or hs.plan is None:
                hs.compiled = compile_hook(hook, hs.hook_id, self.host_ns, monitor=policy.mode == "monitor",
                                       tracepoint_fields=event_fields)
            candidates = candidates_compiled(hook, hs.compiled, self.features)
            hs.plan = candidates[0]
            self._acquire_proc_state(hs)
            # the first method that loads and attaches; spares are tried first
            started = start_hook(hs.compiled, candidates, self.shared_maps, self.pool.take, self.dispatcher,
                                 hs.follow_bits)
            hs.sensor, hs.plan, hs.fallback_from = started.sensor, started.plan, started.failed
            hs.attached_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            if hs.sensor.skipped:     # a list hook attached to fewer functions than planned
                hs.plan = replace(hs.plan, method=f"{hs.plan.method}; {len(hs.sensor.skipped)} "
                                  f"would not attach: {'; '.join(hs.sensor.skipped[:3])}")
            if self.pins is not None:
                adoption.pin_hook(self, hs)
            self.pool.refill(self.pool.key(hs.plan))    # after our own load (and start-up)
        except Exception as exc:     # nothing about one hook may stop the others (BpfError: an OSError)
            self._release_proc_state(hs)
            # BpfError's text is one line plus the verifier's last lines:
            # the reason, on one line for status/list output
            text = exc.render() if isinstance(exc, CompileError) else str(exc)   # file:line: field: why
            reason = " | ".join(line.strip() for line in text.splitlines())
            if not isinstance(exc, (CompileError, AttachError, OSError)):
                reason = f"internal error: {type(exc).__name__}: {reason}"
                log.debug("hook start failed", exc_info=True)
            hs.error = reason
            if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** hs.retries)
                hs.retries += 1
                hs.retry_at = time.monotonic() + delay
                hs.error = f"{reason}; retry {hs.retries} in {delay:.0f} s"
            else:
                hs.retry_at = None
            log.error("policy %s (%s): %s not active: %s", policy.name, policy.file, hook.describe(), hs.error)
            if isinstance(exc, BpfError) and exc.log:
                log.debug("verifier log:\n%s", exc.full_log)
        else:
            hs.error, hs.retry_at, hs.retries = "", None, 0
            log.info("policy %s: %s", policy.name, hs.describe())

    def retry_failed(self, budget: float = 0.1) -> None:
        """Attach again the hooks that failed for want of fds or memory, once
        their backoff is over; at most `budget` seconds per call (a timer's)."""
        now = time.monotonic()
        deadline = now + budget
        for state in list(self.policies.values()):
            for hs in state.hooks:
                if hs.sensor is None and hs.retry_at is not None and hs.retry_at <= now:
                    if time.monotonic() > deadline:
                        return
                    self._attach(hs)

    def _acquire_proc_state(self, hs: HookState) -> None:
        if not hs.compiled.needs_proc_state:
            return
        if self.proc_state is None:
            raise CompileError("matchCapabilityChanges, matchNamespaceChanges and matchBinaries "
                               "followChildren need the process sensor's per-process state, not "
                               "available to this policy manager")
        hs.follow_bits = self.proc_state.acquire(hs.compiled)
        hs.proc_bits = list(hs.follow_bits.values())

    def _release_proc_state(self, hs: HookState) -> None:
        if hs.proc_bits is not None:
            self.proc_state.release(hs.proc_bits)
            hs.proc_bits = None
            hs.follow_bits = {}

    # -- unload --------------------------------------------------------------------------
    def _retire(self, state: PolicyState) -> None:
        now = time.monotonic()
        for hs in state.hooks:
            if hs.pinned:          # unpinned first: destroying our link then detaches it
                self.pins.remove_hook(hs.hook_id)
                hs.pinned = False
            if hs.sensor is not None:
                hs.sensor.stop()
                hs.sensor = None
            self._release_proc_state(hs)
            hs.retired_at = now
            hs.retry_at = None

    def unload(self, name: str) -> None:
        state = self.policies.pop(name)
        self._retire(state)
        self.reloads.unloads += 1

    def unload_file(self, path: str) -> list[str]:
        names = self.names_from(path)
        for name in names:
            self.unload(name)
        self.errors.pop(path, None)
        if self.pins is not None:
            adoption.drop_pinned(self, path)
            self._write_manifest()
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

    # -- pinned state --------------------------------------------------------------------
    def finish_start(self, drain) -> None:
        """Start-up loads are done: pinned versions no file claimed (deleted
        while no agent ran) and orphans are removed, now that what replaces
        them is attached; drain: PinStore.remove_orphans's reader of a
        replaced generation's ring buffer."""
        if self.pins is None:
            return
        for path in list(self.pinned_files):
            log.info("policy file %s: gone since the previous agent; removing its pinned hooks", path)
            adoption.drop_pinned(self, path)
        live = {h.hook_id for s in self.policies.values() for h in s.hooks if h.pinned}
        if self.dispatcher is not None and self.pins.adopted:
            owned = {h.sensor.dispatch_slot for s in self.policies.values() for h in s.hooks
                     if h.sensor is not None and h.sensor.dispatch_slot is not None}
            stray = self.dispatcher.drop_unowned(owned)
            if stray:
                log.info("pinned state: dispatcher slots %s owned by no hook: removed", stray)
        self.pins.remove_orphans(live, drain=drain)
        self._write_manifest()

    def release_all(self) -> None:
        """Exit leaving every hook enforcing through its pins."""
        self.pool.close()
        for state in self.policies.values():
            for hs in state.hooks:
                if hs.sensor is not None:
                    hs.sensor.release()
                    hs.sensor = None

    def _new_hook_id(self) -> int:
        hook_id = next(self._ids)
        if self.pins is not None:       # the manifest carries the high-water mark to the next agent
            self.pins.hook_ids_used = max(self.pins.hook_ids_used, hook_id)
        return hook_id

    def _write_manifest(self) -> None:
        try:
            self.pins.write_manifest(adoption.manifest_files(self))
        except OSError as exc:
            log.error("pinned state: cannot write the manifest (a restart will load everything "
                      "fresh): %s", exc)

    def describe(self) -> list[dict]:
        """Plain data for status / tracingpolicy list."""
        return describe_policies(self.policies)
