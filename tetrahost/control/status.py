"""What `status` and `policy_list` answer: plain data read from the agent at request time."""
from __future__ import annotations

import dataclasses
import os
import time


def _features(features) -> dict:
    if features is None:
        return {}
    if dataclasses.is_dataclass(features):
        return dataclasses.asdict(features)
    return {k: v for k, v in vars(features).items() if not k.startswith("_")}


def policy_list(agent, server) -> list[dict]:
    manager = agent.policies
    if manager is None:
        return []
    directory = getattr(agent, "policy_dir", None)
    records = directory.files if directory is not None else {}
    out = []
    for item in manager.describe():
        item["enforcements"] = server.enforcements.get(item["name"], 0)
        rec = records.get(item["file"])
        # the file changed into something that did not load: the old version still runs
        item["pending_errors"] = [] if rec is None or rec.ok else rec.errors
        out.append(item)
    return out


def pinned_status(agent) -> dict | None:
    """The pinned state (docs/pinning.md): adopted vs fresh hooks, orphan pins."""
    pins = getattr(agent, "pins", None)
    if pins is None:
        return None
    manager = agent.policies
    hooks = [h for s in (manager.policies.values() if manager else ()) for h in s.hooks if h.active]
    return {"pin_dir": pins.root, "generation": pins.generation, "adopted": pins.adopted,
            "problem": pins.problem,
            "hooks_adopted": sum(h.origin == "adopted" for h in hooks),
            "hooks_fresh": sum(h.origin == "fresh" for h in hooks),
            "hooks_unpinned": sum(not h.pinned for h in hooks),
            "orphans": pins.orphans({h.hook_id for h in hooks if h.pinned})}


def agent_status(agent, server) -> dict:
    c = agent.counters
    manager = agent.policies
    active = [h for h in (manager.hooks.values() if manager else ()) if h.active]
    directory = getattr(agent, "policy_dir", None)
    status = {
        "health": "ok",
        "pid": os.getpid(),
        "node_name": agent.node_name,
        "uptime_seconds": round(time.time() - c.started, 3),
        "kernel": {
            "release": os.uname().release,
            "features": _features(agent.features),
            # what this agent really has attached, by BPF program
            "in_use": ["process sensor: " + ", ".join(p.section for p in agent.sensor.obj.programs.values())]
                      + sorted({f"{h.plan.program}: {h.plan.method}" for h in active}),
        },
        "policies": [{"name": n, "state": s.state, "mode": s.policy.mode, "file": os.fspath(s.file),
                      "generation": s.generation,
                      # hooks running on a lesser method because a better one failed here
                      "fallbacks": [f"{h.hook.describe()}: {h.plan.method}" for h in s.hooks
                                    if h.active and h.fallback_from],
                      # uprobe/USDT hooks that followed their binary when it was replaced
                      "reattached": [f"{h.hook.describe()}: re-attached {h.reattached} time(s) after "
                                     f"{h.hook.path} changed" + ("" if h.active else f"; now NOT ACTIVE: {h.error}")
                                     for h in s.hooks if h.binary_changed_at is not None]}
                     for n, s in sorted(manager.policies.items())] if manager else [],
        "policy_reloads": {"ok": manager.reloads.ok, "failed": manager.reloads.failed,
                           "unloads": manager.reloads.unloads} if manager else {},
        "policy_errors": dict(manager.errors) if manager else {},
        "policy_dir": directory.describe() if directory is not None else None,
        "counters": {"records": c.records, "decode_errors": c.decode_errors,
                     "events": dict(c.events), "lost": dict(c.lost)},
        "control": server.describe(),
        "pinned": pinned_status(agent),
    }
    if manager and (manager.errors or any(s.state != "enforcing" and s.state != "monitoring"
                                          for s in manager.policies.values())):
        status["health"] = "degraded"
    return status
