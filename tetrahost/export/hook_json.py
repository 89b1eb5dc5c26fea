"""Policy hook events as Tetragon JSON: process_kprobe / process_lsm lines.

    {"process_kprobe":{"process":{...},"parent":{...},"function_name":"security_bprm_check",
      "args":[{"linux_binprm_arg":{"path":"/tmp/xmrig"}}],"action":"KPROBE_ACTION_SIGKILL",
      "policy_name":"block-cryptominers"},"node_name":"host1","time":"..."}

The process object comes from the process cache, but its "ns" is the one the
kernel saw when the hook fired: a task that called unshare()/setns() since
its exec is in other namespaces than its exec event said.  tetrahost extras:
"selector" (which one matched), "attach" (how the hook is attached),
"monitor": true with the action that would have been taken in policy-mode
monitor, "signal_failed" when the kernel refused to send the signal.
"""
from __future__ import annotations

import json
import struct

from tetrahost.bpf.native import lib
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import HookRecord
from tetrahost.export.tetragon_json import TetragonJSON, signal_name

ACTION_NAMES = {
    lib.TH_ACTION_POST: "KPROBE_ACTION_POST",
    lib.TH_ACTION_NOPOST: "KPROBE_ACTION_NOPOST",
    lib.TH_ACTION_SIGKILL: "KPROBE_ACTION_SIGKILL",
    lib.TH_ACTION_SIGNAL: "KPROBE_ACTION_SIGNAL",
    lib.TH_ACTION_OVERRIDE: "KPROBE_ACTION_OVERRIDE",
}
# enum th_arg_kind -> Tetragon's JSON key for that argument
_PATH_ARG_KEYS = {
    lib.TH_ARG_FILE: "file_arg", lib.TH_ARG_FD: "file_arg", lib.TH_ARG_PATH: "path_arg",
    lib.TH_ARG_DENTRY: "path_arg", lib.TH_ARG_BPRM: "linux_binprm_arg",
}
EVENT_KINDS = {"kprobe": "process_kprobe", "lsm": "process_lsm", "tracepoint": "process_tracepoint"}
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def render_arg(kind: int, arg, raw: bytes) -> dict:
    """One entry of "args": arg is the policy's model.Arg (type, bits, sign, label)."""
    if kind == lib.TH_ARG_INT:
        value = struct.unpack("<q" if arg.signed else "<Q", raw[:8].ljust(8, b"\0"))[0]
        bits = arg.bits or 64
        value &= (1 << bits) - 1
        if arg.signed and value >= 1 << (bits - 1):
            value -= 1 << bits
        key = {"size_t": "size_arg", "long": "long_arg"}.get(arg.base_type, "int_arg")
        out = {key: value}
    elif kind in (lib.TH_ARG_STR_KERNEL, lib.TH_ARG_STR_USER):
        out = {"string_arg": _text(raw)}
    else:
        out = {_PATH_ARG_KEYS.get(kind, "path_arg"): {"path": _text(raw)}}
    if arg.label:
        out["label"] = arg.label
    return out


class HookEventRenderer:
    def __init__(self, base: TetragonJSON, cache: ProcessCache):
        self.base = base
        self.cache = cache

    def render(self, rec: HookRecord, hs) -> str:
        """hs: the tetrahost.sensors.policies.HookState the record's hook_id names."""
        hook, policy = hs.hook, hs.policy
        process = self.cache.get_pid(rec.pid)
        body: dict = {}
        if process is not None:
            p = dict(self.base.process_dict(process))
            p["ns"] = self.base._ns_object(tuple(rec.ns))
            body["process"] = p
            parent = self.cache.parent_of(process)
            if parent is not None:
                body["parent"] = self.base.process_dict(parent)
        else:   # not in the cache (e.g. its exec record was lost): what the kernel told us
            body["process"] = {"pid": rec.pid, "tid": rec.tid, "ns": self.base._ns_object(tuple(rec.ns))}
        if hook.kind == "tracepoint":
            body["subsys"], body["event"] = hook.subsystem, hook.event
        else:
            body["function_name"] = hook.name
        body["args"] = [render_arg(kind, arg, raw)
                        for kind, arg, raw in zip(hs.compiled.arg_kinds, hook.args, rec.args)
                        if kind != lib.TH_ARG_NONE]
        action = ACTION_NAMES.get(rec.action, f"KPROBE_ACTION_{rec.action}")
        if rec.monitor:
            body["action"] = "KPROBE_ACTION_POST"
            body["monitor"] = True
            body["monitor_action"] = action
        else:
            body["action"] = action
        if rec.action in (lib.TH_ACTION_SIGKILL, lib.TH_ACTION_SIGNAL) and not rec.monitor:
            body["signal"] = signal_name(rec.action_arg)
            if rec.signal_failed:
                body["signal_failed"] = True
        if rec.action == lib.TH_ACTION_OVERRIDE:
            body["return_value"] = rec.action_arg
        body["policy_name"] = policy.name
        body["selector"] = rec.selector
        if hs.plan is not None:
            body["attach"] = hs.plan.method
        if hook.message:
            body["message"] = hook.message
        if hook.tags:
            body["tags"] = list(hook.tags)
        kind = EVENT_KINDS[hook.kind]
        return _dumps({kind: body, "node_name": self.base.node_name, "time": self.base.format_ktime(rec.ktime)})
