"""Start one policy hook with the first attach method that really works here.

The probe proves that a kind of program loads and attaches on this kernel,
not that generic.bpf.o's copy of it verifies (newer verifiers check more, e.g.
an LSM program's return range from 6.12) or that a given function takes it.
So the planner hands over every way the probe allows, best first
(attach_candidates), and this module loads and attaches them in turn: a
method that fails is logged and named in the plan that is used, and the hook
fails only when none works.  `verify_candidates` does the same without
attaching, for `tetrahost policy check`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable

from tetrahost.bpf import BpfError, BpfObject
from tetrahost.bpf.native import lib
from tetrahost.policy.compiled import CompiledHook
from tetrahost.sensors.attach import AttachPlan
from tetrahost.sensors.generic import HookSensor, load_hook_object

log = logging.getLogger(__name__)

# Objects the verifier refused on this kernel, by the programs loaded: the
# verdict does not change while the agent runs, so a later reload goes
# straight to the method that works instead of paying for the verifier again.
# Only verifier refusals (with a log) are kept: an attach error or ENOMEM may
# not happen next time.
_REFUSED: dict[tuple, str] = {}


def reason(exc: BaseException, limit: int = 400) -> str:
    """An exception's text on one line (BpfError: the operation and the
    verifier's last lines), short enough for status output."""
    text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def with_failures(plan: AttachPlan, failed: list[str]) -> AttachPlan:
    """The plan used, its method naming the better ones that did not work."""
    if not failed:
        return plan
    return replace(plan, method=f"{plan.method} [fallback; not used: {'; '.join(failed)}]")


@dataclass
class Started:
    sensor: HookSensor
    plan: AttachPlan                  # the one in use (method names the failures)
    failed: list[str] = field(default_factory=list)   # "method: why" of each better one


def start_hook(compiled: CompiledHook, candidates: list[AttachPlan], shared: dict,
               take_spare: Callable[[AttachPlan], BpfObject | None] | None = None,
               dispatcher=None, follow_bits: dict[int, int] | None = None) -> Started:
    """Load, configure and attach the first candidate that works (syscall
    fallbacks through `dispatcher`; follow_bits: HookSensor's).  Raises the last BpfError, its message
    naming every method tried, when none does."""
    failed: list[str] = []
    last: BpfError | None = None
    for plan in candidates:
        refused = _REFUSED.get(plan.programs)
        if refused is not None:
            failed.append(f"{plan.method}: {refused} (refused earlier)")
            continue
        try:
            # spares have a one-entry stack map: a hook with stack traces loads its own
            obj = take_spare(plan) if take_spare and not compiled.needs_stacks else None
            if obj is None:
                sized = {"stack_entries": lib.TH_STACK_ENTRIES} if compiled.needs_stacks else {}
                obj = load_hook_object(plan.programs, shared, **sized)
        except BpfError as exc:
            if exc.log:
                _REFUSED[plan.programs] = reason(exc)
            failed.append(f"{plan.method}: load: {reason(exc)}")
            last = exc
            _warn_next(compiled, plan, failed[-1], candidates)
            continue
        try:
            sensor = HookSensor(compiled, plan, shared, dispatcher, follow_bits).start(obj)
        except BpfError as exc:      # start() has closed the object
            failed.append(f"{plan.method}: attach: {reason(exc)}")
            last = exc
            _warn_next(compiled, plan, failed[-1], candidates)
            continue
        used = with_failures(plan, failed)
        sensor.plan = used
        return Started(sensor, used, failed)
    if last is None:          # every candidate was refused earlier
        last = BpfError(1, "no attach method left")
    raise BpfError(last.errno, f"{compiled.hook.name}: no attach method worked: " + "; ".join(failed))


def _warn_next(compiled: CompiledHook, plan: AttachPlan, failure: str, candidates: list[AttachPlan]) -> None:
    rest = candidates[candidates.index(plan) + 1:]
    then = f"trying {rest[0].method}" if rest else "no other method left"
    log.warning("hook %s: %s; %s", compiled.hook.describe(), failure, then)


@dataclass
class Verified:
    plan: AttachPlan | None           # the first that loads, None if none does
    failed: list[str] = field(default_factory=list)


def verify_candidates(candidates: list[AttachPlan], shared: dict | None = None) -> Verified:
    """Load (verify) each candidate's programs in turn, without attaching,
    until one is accepted: what `policy check` reports as the method."""
    failed: list[str] = []
    for plan in candidates:
        try:
            load_hook_object(plan.programs, shared or {}).close()
        except BpfError as exc:
            failed.append(f"{plan.method}: {reason(exc)}")
            continue
        return Verified(with_failures(plan, failed), failed)
    return Verified(None, failed)
