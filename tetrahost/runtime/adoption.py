"""Policy hooks and the pinned state (tetrahost/sensors/pins.py).

The policy manager calls these: each hook it attaches is pinned and named in
the manifest; at start, a policy file whose pinned version is exactly what the
agent would load now (same file content, same compiled configuration, same
build of the objects) is adopted as it runs: no program is loaded or attached,
so there is neither a gap nor a second copy.  Anything else is loaded fresh and
the pinned version removed after it (drop_pinned), as a live replace does.
"""
from __future__ import annotations

import hashlib
import logging
import os

from tetrahost.policy.compile import compile_hook
from tetrahost.sensors.attach import plan_compiled
from tetrahost.sensors.generic import HookSensor
from tetrahost.tracefs import event_fields

log = logging.getLogger(__name__)


def digest_of(text: str) -> str:
    """The content hash the manifest keeps per policy file (the policy
    directory's sha256 of the file's bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def adopt_file(manager, path: str, digest: str, result) -> list | None:
    """PolicyStates for the pinned version of `path` taken over as it runs, or
    None (with the reason logged) when it must be loaded fresh."""
    from tetrahost.runtime.state import HookState, PolicyState

    entry = manager.pinned_files.get(path)
    if entry is None:
        return None
    why = _mismatch(entry, digest, result)
    states: list = []
    try:
        if why is None:
            for policy, pinned_policy in zip(result.policies, entry["policies"]):
                state = PolicyState(policy, digest=digest)
                for hook, pinned_hook in zip(policy.hooks, pinned_policy["hooks"]):
                    hs = HookState(pinned_hook["id"], policy, hook, origin="adopted")
                    why = _adopt_hook(manager, hs, pinned_hook)
                    if why is not None:
                        break
                    state.hooks.append(hs)
                states.append(state)
                if why is not None:
                    break
    except OSError as exc:      # a pin missing or not ours
        why = f"its pins cannot be opened: {exc}"
    if why is not None:
        for state in states:           # close our fds; the pins stay until drop_pinned
            for hs in state.hooks:
                if hs.sensor is not None:
                    for link in hs.sensor.pinnable_links():
                        link.destroy()
        log.info("policy file %s: pinned version not adopted (%s): loading it fresh", path, why)
        return None
    del manager.pinned_files[path]
    for state in states:
        for hs in state.hooks:
            manager.hooks[hs.hook_id] = hs
        log.info("policy %s: adopted %d pinned hook(s) as they run (no re-attach)", state.policy.name,
                 len(state.hooks))
    return states


def _mismatch(entry: dict, digest: str, result) -> str | None:
    if entry["digest"] != digest:
        return "the file changed while no agent ran"
    pinned = [(p["name"], len(p["hooks"])) for p in entry["policies"]]
    now = [(p.name, len(p.hooks)) for p in result.policies]
    if pinned != now:
        return f"pinned policies {pinned} differ from the file's {now} (a hook had failed)"
    return None


def _adopt_hook(manager, hs, pinned_hook: dict) -> str | None:
    hs.compiled = compile_hook(hs.hook, hs.hook_id, manager.host_ns, monitor=hs.policy.mode == "monitor",
                               tracepoint_fields=event_fields)
    if hs.compiled.needs_proc_state:
        return "a hook needs per-process state, which is rebuilt by a fresh load"
    if hs.compiled.needs_stacks:
        return "a hook's stack traces are read from its own map, which a fresh load recreates"
    hs.plan = plan_compiled(hs.hook, hs.compiled, manager.features)
    dispatch = pinned_hook.get("dispatch")
    sensor = HookSensor.adopted(hs.compiled, hs.plan, manager.shared_maps, manager.dispatcher, [],
                                dispatch["slot"] if dispatch else None)
    if isinstance(pinned_hook.get("target"), list):    # the file it went on, maybe replaced since
        sensor.target_id = tuple(pinned_hook["target"])
    if sensor.config_digest() != pinned_hook["config"]:
        return f"hook {hs.hook.describe()} compiles differently now"
    if bool(dispatch) != sensor.dispatched:
        return f"hook {hs.hook.describe()} is attached differently now"
    sensor.links = manager.pins.open_links(manager.pins.hook_dir(hs.hook_id), pinned_hook["links"],
                                           hs.hook.describe())
    if dispatch:
        sensor.links[:0] = [manager.dispatcher.adopt_registration(d, dispatch["slot"], dispatch[d])
                            for d in ("enter", "exit") if dispatch.get(d)]
    hs.sensor = sensor
    hs.pinned = True
    return None


def drop_pinned(manager, path: str) -> None:
    """Remove the pinned version of `path` not adopted (replaced by a fresh
    load, or its file deleted while no agent ran)."""
    entry = manager.pinned_files.pop(path, None)
    if entry is None:
        return
    for pol in entry["policies"]:
        for hook in pol["hooks"]:
            dispatch = hook.get("dispatch")
            if dispatch and manager.dispatcher is not None:
                for d in ("enter", "exit"):
                    if dispatch.get(d):
                        manager.dispatcher.adopt_registration(d, dispatch["slot"], dispatch[d]).destroy()
            manager.pins.remove_hook(hook["id"])
        log.info("policy %s (%s): pinned version removed", pol["name"], path)


def pin_hook(manager, hs) -> None:
    """Pin a hook just attached; a failure costs only the survival of the
    hook across a restart (it enforces while this agent runs)."""
    try:
        manager.pins.pin_links(manager.pins.hook_dir(hs.hook_id), hs.sensor.pinnable_links())
        hs.pinned = True
    except OSError as exc:
        log.error("policy %s: %s: cannot pin (it will not survive a restart): %s", hs.policy.name,
                  hs.hook.describe(), exc)


def manifest_files(manager) -> dict:
    """The manifest's files: what runs, plus pinned versions not yet claimed
    during start-up (still enforcing: a crash now must not orphan them)."""
    files = dict(manager.pinned_files)
    for state in manager.policies.values():
        entry = files.setdefault(os.fspath(state.file), {"digest": state.digest, "policies": []})
        if entry["digest"] != state.digest:
            continue
        hooks = []
        for hs in state.hooks:
            if hs.sensor is None or not hs.pinned:
                continue
            regs = hs.sensor.registrations()
            hooks.append({"id": hs.hook_id, "links": len(hs.sensor.pinnable_links()),
                          "config": hs.sensor.config_digest(),
                          **({"target": list(hs.sensor.target_id)} if hs.sensor.target_id else {}),
                          "dispatch": {"slot": hs.sensor.dispatch_slot,
                                       **{r.direction: list(r.numbers) for r in regs}} if regs else None})
        entry["policies"].append({"name": state.policy.name, "hooks": hooks})
    return files
