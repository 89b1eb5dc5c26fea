"""Policy hook events as Tetragon JSON: process_kprobe / process_lsm /
process_tracepoint / process_uprobe lines.

    {"process_kprobe":{"process":{...},"parent":{...},"function_name":"security_bprm_check",
      "args":[{"linux_binprm_arg":{"path":"/tmp/xmrig"}}],"action":"KPROBE_ACTION_SIGKILL",
      "policy_name":"block-cryptominers"},"node_name":"host1","time":"..."}

A uprobe's line carries "path" (the binary as the policy names it), "symbol"
(or "offset", a uint64 and so a JSON string, when probed by file offset), and
no "action": Tetragon's ProcessUprobe has no such field, so with
`export.host_fields` the action taken is "tetrahost"."action".

The process object comes from the process cache, but its "ns" is the one the
kernel saw when the hook fired: a task that called unshare()/setns() since
its exec is in other namespaces than its exec event said.  Network arguments render as Tetragon's sock_arg /
sockaddr_arg / skb_arg (net_dev_arg for a net_device).  Only Tetragon's
fields are written (tetrahost/export/conformance.py checks it); 64-bit
integers (size_arg, long_arg, cookie, orig_size) are JSON strings, as
protobuf's JSON mapping writes them.

With `export.host_fields = true` a top-level "tetrahost" member adds what
Tetragon has no field for: "selector" (which one matched), "attach" (how the
hook is attached), "monitor": true with "monitor_action" (the action policy-mode
monitor did not take), "signal" (the signal sent by Sigkill/Signal),
"signal_failed" when the kernel refused to send it, "socket_owner": true when
the process is the owner TrackSock recorded for the event's socket rather
than the task the hook ran in, "path_unresolved": true when a path argument
was deeper than the kernel-side walk reaches (TH_PATH_DEPTH components), so
Prefix/Equal on it could not be decided and made the selector match (fail
closed), "return_value" (Override's value), "return_arg" (the return value
of an LSM or tracepoint hook, which Tetragon's messages have no field for),
and per argument index in
"args" (and for the return value in "return"): the network namespace
("netns", "netns_name"), the device ("ifindex", "ifname"), "read_error":
"CharBufErrorPageFault" for a char_buf whose bytes could not be read.

Arguments and return values render as tetrahost.export.arg_json says.
"""
from __future__ import annotations

from tetrahost.bpf.native import lib
from tetrahost.events import netns as _netns
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import HookRecord
from tetrahost.events.text import bytes_to_text
from tetrahost.export.arg_json import NET_ARG_KEYS, buf_read_failed, net_host_fields, render_arg, render_return
from tetrahost.export.encode import dumps
from tetrahost.export.hook_fragments import ARGS_MARK, TIME_MARK, HookFragments
from tetrahost.export.ima import ima_hash_text
from tetrahost.export.kobj_json import signature_known
from tetrahost.export.stacks import StackRenderer
from tetrahost.export.tetragon_json import TetragonJSON, signal_name
from tetrahost.arch import entry_function

ACTION_NAMES = {
    lib.TH_ACTION_POST: "KPROBE_ACTION_POST",
    lib.TH_ACTION_NOPOST: "KPROBE_ACTION_NOPOST",
    lib.TH_ACTION_SIGKILL: "KPROBE_ACTION_SIGKILL",
    lib.TH_ACTION_SIGNAL: "KPROBE_ACTION_SIGNAL",
    lib.TH_ACTION_OVERRIDE: "KPROBE_ACTION_OVERRIDE",
    lib.TH_ACTION_TRACK_SOCK: "KPROBE_ACTION_TRACKSOCK",
    lib.TH_ACTION_UNTRACK_SOCK: "KPROBE_ACTION_UNTRACKSOCK",
    lib.TH_ACTION_NOTIFY_ENFORCER: "KPROBE_ACTION_NOTIFYENFORCER",
}
EVENT_KINDS = {"kprobe": "process_kprobe", "lsm": "process_lsm", "tracepoint": "process_tracepoint",
               "uprobe": "process_uprobe", "usdt": "process_usdt"}
_NO_ACTION_FIELD = ("uprobe", "usdt")    # Tetragon's ProcessUprobe / ProcessUsdt have no "action"
_dumps = dumps      # tetrahost.export.encode: orjson when installed, same text
_LOOK_UP = object()     # render(): the caller did not pass the process


def function_name(hook, syscall_nr: int, compat: bool = False) -> str:
    """The function that fired: a list hook covers several syscalls and the
    record says which, shown as Tetragon names the kprobe ("__x64_sys_dup2",
    "__ia32_sys_dup" for a 32-bit program's)."""
    function = entry_function(syscall_nr, compat) if hook.syscall_list else None
    return function or hook.name


def user_actions(hook, rec: HookRecord) -> list[tuple[str, str]]:
    """(action, target) of the DnsLookup/GetUrl actions of the selector that matched."""
    selectors = getattr(hook, "selectors", ())      # hand-made hooks (benchmarks, tests) may have none
    if not 0 <= rec.selector < len(selectors):
        return []
    return [(a.action, a.arg_fqdn or a.arg_url) for a in selectors[rec.selector].match_actions
            if a.action in ("DnsLookup", "GetUrl")]


class HookEventRenderer:
    def __init__(self, base: TetragonJSON, cache: ProcessCache, netns: _netns.NetnsResolver | None = None,
                 fragments: bool = True):
        """fragments: reuse the rendered parts of earlier events of the same
        process and hook (tetrahost.export.hook_fragments)."""
        self.base = base
        self.cache = cache
        self._netns = netns
        self._stacks: StackRenderer | None = None
        self.fragments = HookFragments(self) if fragments else None
        self._dicts: dict[int, tuple] = {}      # id(process entry) -> (entry, its process dict)

    def stacks(self, hs, rec: HookRecord) -> dict:
        """kernel_stack_trace / user_stack_trace of the event, read from its
        hook's stack_traces map (ids < 0: none was asked, or none was taken)."""
        obj = getattr(hs.sensor, "obj", None) if getattr(hs, "sensor", None) is not None else None
        if obj is None or (rec.kernel_stack_id < 0 and rec.user_stack_id < 0):
            return {}
        if self._stacks is None or self._stacks.addresses != self.base.stack_addresses:
            self._stacks = StackRenderer(self.base.stack_addresses)
        stack_map, out = obj.map("stack_traces"), {}
        for key, stack_id in (("kernel_stack_trace", rec.kernel_stack_id), ("user_stack_trace", rec.user_stack_id)):
            raw = stack_map.lookup(stack_id.to_bytes(4, "little")) if stack_id >= 0 else None
            if raw is not None:
                raw = bytes(raw)
                out[key] = (self._stacks.kernel_stack(raw) if key.startswith("kernel")
                            else self._stacks.user_stack(rec.pid, raw))
        return out

    @property
    def netns(self) -> _netns.NetnsResolver:
        if self._netns is None:
            self._netns = _netns.default_resolver()
        return self._netns

    def _bare_process(self, rec: HookRecord) -> dict:
        """The process object of a record whose process the cache does not know
        (e.g. its exec record was lost): what the kernel told us."""
        if self.base.process_ns:
            return {"pid": rec.pid, "tid": rec.tid, "ns": self.base._ns_object(tuple(rec.ns))}
        return {"pid": rec.pid, "tid": rec.tid}

    def _process_members(self, rec: HookRecord, process) -> list[str]:
        """The "process" and "parent" members as JSON text.  The process's
        rendering kept on its cache entry is reused unless the hook saw other
        namespaces (setns/unshare since its exec) or another thread."""
        if process is None:     # not in the cache (e.g. its exec record was lost): what the kernel told us
            return [f'"process":{_dumps(self._bare_process(rec))}']
        with_ns = self.base.process_ns
        ns = tuple(rec.ns) if with_ns else ()
        if rec.tid == process.tid and (not with_ns or ns == tuple(process.ns)):
            members = [f'"process":{self.base.process_json(process)}']
        else:
            p = self.base.process_dict(process)      # a new dict: its two fields can be replaced
            if with_ns:
                p["ns"] = self.base._ns_object(ns)
            p["tid"] = rec.tid          # the thread the hook fired in, as Tetragon reports it
            members = [f'"process":{_dumps(p)}']
        parent = self.cache.parent_of(process)
        if parent is not None:
            members.append(f'"parent":{self.base.process_json(parent)}')
        return members

    def render(self, rec: HookRecord, hs, process=_LOOK_UP) -> str:
        """hs: the tetrahost.runtime.state.HookState the record's hook_id names;
        process: the record's cache entry when the caller already looked it up."""
        if process is _LOOK_UP:
            process = self.cache.get_pid(rec.pid)
        if self.fragments is not None and not self.base.host_fields and self.fragments.applies(rec):
            return self.fragments.line(rec, hs, process)
        return self.render_full(rec, hs, process)

    def render_full(self, rec: HookRecord, hs, process, marks: bool = False) -> str:
        """The whole line, every part rendered anew.  marks: "args" and "time"
        hold place-holders (hook_fragments cuts the line there)."""
        base = self.base
        members = self._process_members(rec, process)
        kind, body, args, ret, action = self._body(rec, hs, process, marks)
        rest = _dumps(body)[1:-1]
        host = ""
        if base.host_fields:
            host = base.host_member(process, self.cache.parent_of(process) if process is not None else None,
                                    _dumps(self._host_fields(rec, hs, args, action, ret, body))[1:-1])
        return (f'{{"{kind}":{{{",".join(members)},{rest}}},"node_name":{_dumps(base.node_name)},'
                f'"time":{_dumps(TIME_MARK if marks else base.format_ktime(rec.ktime))}{host}}}')

    def event_dict(self, rec: HookRecord, hs, process) -> dict:
        """The same event as a dict, from the same objects (compact, field filters)."""
        base = self.base
        kind, body, args, ret, action = self._body(rec, hs, process, False)
        if process is None:
            members = {"process": self._bare_process(rec)}
        else:
            p = self._process_dict(process)
            if base.process_ns and tuple(rec.ns) != tuple(process.ns):
                p = {**p, "ns": base._ns_object(tuple(rec.ns)), "tid": rec.tid}
            elif rec.tid != process.tid:
                p = {**p, "tid": rec.tid}
            members = {"process": p}
            parent = self.cache.parent_of(process)
            if parent is not None:
                members["parent"] = self._process_dict(parent)
        out = {kind: {**members, **body}, "node_name": base.node_name, "time": base.format_ktime(rec.ktime)}
        if base.host_fields:
            parent = self.cache.parent_of(process) if process is not None else None
            host = {}
            if process is not None:
                host["process"] = base.host_process(process)
            if parent is not None:
                host["parent"] = base.host_process(parent)
            host.update(self._host_fields(rec, hs, args, action, ret, body))
            out["tetrahost"] = host
        return out

    def _process_dict(self, entry) -> dict:
        """base.process_dict(entry), kept per entry (its fields never change;
        shared by the events of a flood: read-only)."""
        kept = self._dicts.get(id(entry))
        if kept is None or kept[0] is not entry:
            if len(self._dicts) >= 4096:
                self._dicts.clear()
            kept = self._dicts[id(entry)] = (entry, self.base.process_dict(entry))
        return kept[1]

    def _body(self, rec: HookRecord, hs, process, marks: bool):
        """(event kind, body members after process/parent, argument triples,
        return object, action name) of a hook event."""
        hook, policy = hs.hook, hs.policy
        base = self.base
        binary = bytes_to_text(process.binary) if process is not None and base.redactor is not None else ""
        body: dict = {}
        if hook.kind == "tracepoint":
            body["subsys"], body["event"] = hook.subsystem, hook.event
        elif hook.kind == "uprobe":
            body["path"] = hook.path
            if hook.symbol:
                body["symbol"] = hook.symbol
            else:
                body["offset"] = str(hook.offset)       # uint64
        elif hook.kind == "usdt":
            body["path"], body["provider"], body["name"] = hook.path, hook.provider, hook.usdt_name
        else:
            body["function_name"] = function_name(hook, rec.syscall_nr, rec.compat)
        args = [(kind, arg, raw) for kind, arg, raw in zip(hs.compiled.arg_kinds, hook.args, rec.args)
                if kind != lib.TH_ARG_NONE]
        body["args"] = ARGS_MARK if marks else [
            render_arg(kind, arg, raw, self.netns if kind in NET_ARG_KEYS else None, base.redactor, binary)
            for kind, arg, raw in args]
        ret = None
        if rec.retval is not None:
            ret = render_return(hook, rec.retval, rec.ret_raw, self.netns if rec.ret_raw else None)
            if hook.kind == "kprobe":       # Tetragon's ProcessLsm / ProcessTracepoint have no "return"
                body["return"] = ret
        action = ACTION_NAMES.get(rec.action, f"KPROBE_ACTION_{rec.action}")
        user = user_actions(hook, rec)
        if user and rec.action == lib.TH_ACTION_POST:     # posted for DnsLookup/GetUrl: name that
            action = f"KPROBE_ACTION_{user[0][0].upper()}"
        if hook.kind not in _NO_ACTION_FIELD:
            # policy-mode monitor: nothing was enforced, the event is a Post
            body["action"] = "KPROBE_ACTION_POST" if rec.monitor else action
        if hook.kind == "kprobe":      # Tetragon's ProcessKprobe alone has the fields
            body.update(self.stacks(hs, rec))
        body["policy_name"] = policy.name
        if hook.kind == "lsm" and rec.ima_algo >= 0:      # Tetragon's ProcessLsm alone has it
            body["ima_hash"] = ima_hash_text(rec.ima_algo, rec.ima_digest)
        if hook.message:
            body["message"] = hook.message
        if hook.tags:
            body["tags"] = list(hook.tags)
        return EVENT_KINDS[hook.kind], body, args, ret, action

    def _host_fields(self, rec: HookRecord, hs, args, action: str, returned, body) -> dict:
        """The hook event's members of the "tetrahost" object (export.host_fields);
        returned: the return object, kept here when the body has no "return"."""
        out: dict = {"selector": rec.selector}
        known = rec.action in ACTION_NAMES      # Set is not among Tetragon's KprobeAction names
        if hs.hook.kind in _NO_ACTION_FIELD and (known or rec.monitor):
            out["action"] = "KPROBE_ACTION_POST" if rec.monitor else action
        if hs.plan is not None:
            out["attach"] = hs.plan.method
        if rec.monitor:
            out["monitor"] = True
            if known:
                out["monitor_action"] = action
        if rec.action == lib.TH_ACTION_SET:     # the argument Set writes and the value (the config's)
            out["set_arg"] = rec.action_arg
            out["set_value"] = int(hs.compiled.config.selectors[rec.selector].set_value)
            if rec.set_failed:
                out["set_failed"] = True
        if rec.action in (lib.TH_ACTION_SIGKILL, lib.TH_ACTION_SIGNAL) and not rec.monitor:
            out["signal"] = signal_name(rec.action_arg)
            if rec.signal_failed:
                out["signal_failed"] = True
        if rec.path_unresolved:
            out["path_unresolved"] = True  # a path too deep to reach its root: Prefix/Equal failed closed
        if rec.sock_owner:
            out["socket_owner"] = True     # process = the socket's TrackSock owner, not the running task
        if rec.action == lib.TH_ACTION_OVERRIDE:
            out["return_value"] = rec.action_arg
        per_arg = {}
        for i, (kind, _arg, raw) in enumerate(args):
            fields = {}
            if kind in NET_ARG_KEYS:
                fields = net_host_fields(kind, raw, self.netns)
            elif kind in (lib.TH_ARG_BUF_KERNEL, lib.TH_ARG_BUF_USER, lib.TH_ARG_IOV_ITER) and buf_read_failed(raw):
                fields = {"read_error": "CharBufErrorPageFault"}
            elif kind == lib.TH_ARG_LOAD_INFO and not signature_known(raw):
                fields = {"signature_checked": False}   # no CONFIG_MODULE_SIG: signature_ok says nothing
            if fields:
                per_arg[str(i)] = fields
        if per_arg:
            out["args"] = per_arg
        ret = hs.hook.return_arg
        if rec.retval is not None and rec.ret_raw and ret is not None and ret.base_type in ("sock", "socket"):
            fields = net_host_fields(lib.TH_ARG_SOCK, rec.ret_raw, self.netns)
            if fields:
                out["return"] = fields
        if returned is not None and "return" not in body:
            out["return_arg"] = returned
        return out
