"""What `status` and `policy_list` answer: plain data rendered from one AgentSnapshot
(tetrahost/runtime/snapshot.py), never from the agent's live objects."""
from __future__ import annotations

import time


def _policy_item(p, enforcements: dict, records: dict) -> dict:
    rec = records.get(p.file)
    return {"name": p.name, "file": p.file, "state": p.state, "mode": p.mode, "generation": p.generation,
            "loaded_at": p.loaded_at, "events": p.events, "hooks": [dict(h) for h in p.hooks],
            "enforcements": enforcements.get(p.name, 0),
            # the file changed into something that did not load: the old version still runs
            "pending_errors": [] if rec is None or rec["ok"] else list(rec["errors"])}


def policy_list(snap, enforcements: dict) -> list[dict]:
    """tracingpolicy list: every loaded policy with its hooks; enforcements: policy -> enforced events."""
    directory = snap.sections.get("policy_dir")
    records = {f["file"]: f for f in directory["files"]} if directory else {}
    return [_policy_item(p, enforcements, records) for p in snap.policies]


def agent_status(snap) -> dict:
    manager_present = bool(snap.policy_reloads)
    return {
        "health": "degraded" if snap.degraded else "ok",
        "pid": snap.pid,
        "node_name": snap.node_name,
        "uptime_seconds": round(time.time() - snap.started, 3),
        "kernel": {
            "release": snap.kernel_release,
            "features": dict(snap.features),
            "in_use": list(snap.in_use),        # what this agent really has attached, by BPF program
        },
        "policies": [{"name": p.name, "state": p.state, "mode": p.mode, "file": p.file,
                      "generation": p.generation, "fallbacks": list(p.fallbacks),
                      "reattached": list(p.reattached)} for p in snap.policies],
        "policy_reloads": dict(snap.policy_reloads) if manager_present else {},
        "policy_errors": dict(snap.policy_errors),
        "policy_dir": snap.sections.get("policy_dir"),
        "counters": {"records": snap.records, "decode_errors": snap.decode_errors,
                     "events": dict(snap.events), "lost": dict(snap.lost)},
        "control": snap.sections.get("control"),
        "pinned": {**snap.pinned, "orphans": list(snap.pinned["orphans"])} if snap.pinned else None,
    }
