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

Redaction (tetrahost.export.redaction) is applied to string_arg and to the
bytes of bytes_arg / truncated_bytes_arg before they are encoded.

A kiocb renders as the file_arg of its file; an iov_iter as a char_buf of
its first segment (bytes_arg / truncated_bytes_arg); bpf_attr, bpf_map,
perf_event, module and load_info as tetrahost.export.kobj_json says (with
host field "signature_checked": false for a load_info on a kernel that does
not check module signatures).

Other arguments as Tetragon renders them: integers as int_arg (int8..int32),
uint_arg (uint8..uint32), size_arg (uint64, size_t), long_arg (int64, long);
a capability as capability_arg {value, name}; a kernel_cap_t (cap_*) as
kernel_cap_t_arg (cap_*_arg): the mask in 16 hex digits; a cred as
process_credentials_arg (ids, securebits names, caps, user_ns); a
user_namespace as user_ns_arg; a char_buf as bytes_arg (base64), or
truncated_bytes_arg {bytes_arg, orig_size} when the kernel side copied only
the first TH_BUF_MAX bytes.  capability_arg's "name" (a plain string in
Tetragon's schema) is the kernel's CAP_* name; capability sets use Tetragon's
CapabilitiesType names, as in process objects (tetragon_json.py).
"""
from __future__ import annotations

import base64
import ipaddress
import struct

from tetrahost.bpf.native import ffi, lib
from tetrahost.events import netns as _netns
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import HookRecord
from tetrahost.events.text import bytes_to_text, os_text
from tetrahost.export.encode import dumps
from tetrahost.export.hook_fragments import ARGS_MARK, TIME_MARK, HookFragments
from tetrahost.export.ima import ima_hash_text
from tetrahost.export.kobj_json import KOBJ_KINDS, render_kobj, signature_known
from tetrahost.export.stacks import StackRenderer
from tetrahost.export.tetragon_json import KERNEL_CAPABILITY_NAMES, TetragonJSON, signal_name
from tetrahost.policy.names import ADDRESS_FAMILIES, IP_PROTOCOLS, TCP_STATES
from tetrahost.policy.vocab import ArgKind
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
# enum th_arg_kind -> Tetragon's JSON key for that argument
_PATH_ARG_KEYS = {
    lib.TH_ARG_FILE: "file_arg", lib.TH_ARG_FD: "file_arg", lib.TH_ARG_PATH: "path_arg",
    lib.TH_ARG_DENTRY: "path_arg", lib.TH_ARG_BPRM: "linux_binprm_arg", lib.TH_ARG_KIOCB: "file_arg",
}
_NET_ARG_KEYS = {
    lib.TH_ARG_SOCK: "sock_arg", lib.TH_ARG_SOCKET: "sock_arg", lib.TH_ARG_SOCKADDR: "sockaddr_arg",
    lib.TH_ARG_SOCKADDR_USER: "sockaddr_arg", lib.TH_ARG_SKB: "skb_arg", lib.TH_ARG_NETDEV: "net_dev_arg",
}
_AF_INET, _AF_INET6 = ADDRESS_FAMILIES["AF_INET"], ADDRESS_FAMILIES["AF_INET6"]
_FAMILY_NAMES = {v: k for k, v in reversed(ADDRESS_FAMILIES.items())}     # AF_UNIX over AF_LOCAL
_PROTOCOL_NAMES = {v: k for k, v in reversed(IP_PROTOCOLS.items())}
_STATE_NAMES = {v: k for k, v in reversed(TCP_STATES.items())}
_SOCK_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM", 5: "SOCK_SEQPACKET",
               6: "SOCK_DCCP", 10: "SOCK_PACKET"}
# integer base types (tetrahost.policy.vocab) -> Tetragon's JSON key
_INT_ARG_KEYS = {"uint8": "uint_arg", "uint16": "uint_arg", "uint32": "uint_arg", "uint64": "size_arg",
                 "int64": "long_arg"}
_LONG_KEYS = ("size_arg", "long_arg")      # uint64 / int64: JSON strings
_CAP_SET_KEYS = {"kernel_cap_t": "kernel_cap_t_arg", "cap_inheritable": "cap_inheritable_arg",
                 "cap_permitted": "cap_permitted_arg", "cap_effective": "cap_effective_arg"}
# SECBIT_* bit -> Tetragon's SecureBitsType name
SECUREBITS_NAMES = ("SecBitNoRoot", "SecBitNoRootLocked", "SecBitNoSetUidFixup", "SecBitNoSetUidFixupLocked",
                    "SecBitKeepCaps", "SecBitKeepCapsLocked", "SecBitNoCapAmbientRaise",
                    "SecBitNoCapAmbientRaiseLocked")
_BUF_FAULT = 1 << lib.TH_BUF_FAULT_SHIFT
EVENT_KINDS = {"kprobe": "process_kprobe", "lsm": "process_lsm", "tracepoint": "process_tracepoint",
               "uprobe": "process_uprobe", "usdt": "process_usdt"}
_NO_ACTION_FIELD = ("uprobe", "usdt")    # Tetragon's ProcessUprobe / ProcessUsdt have no "action"
_dumps = dumps      # tetrahost.export.encode: orjson when installed, same text


_text = bytes_to_text


def _addr(family: int, raw) -> str:
    data = bytes(raw)
    if family == _AF_INET:
        return str(ipaddress.IPv4Address(data[:4]))
    if family == _AF_INET6:
        return str(ipaddress.IPv6Address(data[:16]))
    return ""


def _name(names: dict, value: int) -> str:
    return names.get(value, str(value))


def _netns_of(t, resolver) -> dict:
    """Host fields: the network namespace's inode and, where it has one, its /run/netns name."""
    out: dict = {}
    if t.netns:
        out["netns"] = t.netns
        name = resolver.name(t.netns) if resolver else None
        if name:
            out["netns_name"] = os_text(name)     # a /run/netns file name
    return out


def _netns_fields(t, resolver) -> dict:
    """Host fields: the namespace (inode, /run/netns name) and device."""
    out = _netns_of(t, resolver)
    if t.ifindex:
        out["ifindex"] = t.ifindex
        ifname = bytes_to_text(ffi.string(t.ifname)) if t.ifname[0] else (
            resolver.ifname(t.netns, t.ifindex) if resolver else None)
        if ifname:
            out["ifname"] = os_text(ifname)
    return out


def net_host_fields(kind: int, raw: bytes, resolver=None) -> dict:
    """The host fields of a network argument: netns, netns_name, ifindex, ifname."""
    t = _decode("struct th_sock_tuple", raw)
    if t.flags & lib.TH_SOCK_READ_FAILED and not t.family:
        return {}
    if kind == lib.TH_ARG_NETDEV:
        return {"ifindex": t.ifindex, **_netns_of(t, resolver)} if t.ifindex else _netns_of(t, resolver)
    if kind in (lib.TH_ARG_SOCKADDR, lib.TH_ARG_SOCKADDR_USER):
        return {}
    return _netns_fields(t, resolver)


def render_net_arg(kind: int, raw: bytes, resolver=None) -> dict:
    """A sock/socket/sockaddr/skb/net_device argument, Tetragon-shaped (zero
    mark/priority left out, as Tetragon's JSON leaves out zero values)."""
    t = _decode("struct th_sock_tuple", raw)
    key = _NET_ARG_KEYS[kind]
    if t.flags & lib.TH_SOCK_READ_FAILED and not t.family:
        return {key: {}}
    if kind == lib.TH_ARG_NETDEV:
        return {key: {"name": bytes_to_text(ffi.string(t.ifname))}}
    family = _name(_FAMILY_NAMES, t.family)
    if kind in (lib.TH_ARG_SOCKADDR, lib.TH_ARG_SOCKADDR_USER):
        body = {"family": family}
        if t.family in (_AF_INET, _AF_INET6):
            body["addr"] = _addr(t.family, t.saddr)
            body["port"] = t.sport
        return {key: body}
    if kind == lib.TH_ARG_SKB:
        body = {"family": family, "len": t.len, "proto": t.protocol,
                "protocol": _name(_PROTOCOL_NAMES, t.protocol),
                "saddr": _addr(t.family, t.saddr), "daddr": _addr(t.family, t.daddr)}
        if t.flags & lib.TH_SOCK_HAS_PORTS:
            body["sport"], body["dport"] = t.sport, t.dport
    else:
        body = {"family": family, "type": _name(_SOCK_TYPES, t.type),
                "protocol": _name(_PROTOCOL_NAMES, t.protocol)}
        if t.family in (_AF_INET, _AF_INET6):
            body.update(saddr=_addr(t.family, t.saddr), daddr=_addr(t.family, t.daddr),
                        sport=t.sport, dport=t.dport)
        body["cookie"] = str(t.cookie)      # uint64
        if t.state:
            body["state"] = _name(_STATE_NAMES, t.state)
    if t.mark:
        body["mark"] = t.mark
    if t.priority:
        body["priority"] = t.priority
    return {key: body}


def _decode(ctype: str, raw: bytes):
    """The struct a slot holds (cdata), zero-filled past the bytes given."""
    out = ffi.new(f"{ctype} *")
    data = bytes(raw[:ffi.sizeof(ctype)])
    ffi.memmove(out, data, len(data))
    return out


def _user_ns(u) -> dict:
    # Tetragon: level 0 is the initial user namespace, i.e. the host's
    ns: dict = {"inum": u.inum}
    if u.level == 0:
        ns["is_host"] = True
    return {"level": u.level, "uid": u.uid, "gid": u.gid, "ns": ns}


def securebits_names(bits: int) -> list[str]:
    return [name for i, name in enumerate(SECUREBITS_NAMES) if bits >> i & 1]


def render_cred(raw: bytes) -> dict:
    """process_credentials_arg: Tetragon's ProcessCredentials message."""
    c = _decode("struct th_cred", raw)
    if c.flags & lib.TH_CRED_READ_FAILED:
        return {}
    ids = c.ids
    out: dict = {"uid": ids.uid, "gid": ids.gid, "euid": ids.euid, "egid": ids.egid,
                 "suid": ids.suid, "sgid": ids.sgid, "fsuid": ids.fsuid, "fsgid": ids.fsgid}
    if c.securebits:
        out["securebits"] = securebits_names(c.securebits)
    caps = TetragonJSON._cap_object(c.caps.permitted, c.caps.effective, c.caps.inheritable)
    out["caps"] = {name: list(names) for name, names in caps.items()}    # a copy: that one is cached
    out["user_ns"] = _user_ns(c.user_ns)
    return out


def buf_read_failed(raw: bytes) -> bool:
    """The kernel could not read the char_buf (host field read_error)."""
    return bool(_decode("struct th_char_buf", raw).size & _BUF_FAULT)


def render_buf(raw: bytes, redact=None) -> dict:
    """bytes_arg (base64, as protobuf JSON writes bytes), truncated_bytes_arg
    {bytes_arg, orig_size (uint64: a string)} when only the first TH_BUF_MAX
    bytes were copied; an empty bytes_arg when they could not be read.
    redact: bytes -> bytes, applied before encoding."""
    b = _decode("struct th_char_buf", raw)
    size = b.size & lib.TH_BUF_SIZE_MAX
    if b.size & _BUF_FAULT:
        return {"bytes_arg": ""}
    data = bytes(ffi.buffer(b.data))[:min(size, lib.TH_BUF_MAX)]
    copied = len(data)
    if redact is not None:
        data = redact(data)
    text = base64.b64encode(data).decode()
    if size > copied:
        return {"truncated_bytes_arg": {"bytes_arg": text, "orig_size": str(size)}}
    return {"bytes_arg": text}


def _int_value(arg, raw: bytes) -> int:
    value = struct.unpack("<q" if arg.signed else "<Q", raw[:8].ljust(8, b"\0"))[0]
    bits = arg.bits or 64
    value &= (1 << bits) - 1
    if arg.signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def render_syscall64(raw: bytes) -> dict:
    """Tetragon's syscall_id: the number without the 32-bit flag, and the ABI it belongs to."""
    value = struct.unpack("<Q", raw[:8].ljust(8, b"\0"))[0]
    i386 = bool(value & lib.TH_SYSCALL64_I386)
    return {"syscall_id": {"id": value & ~lib.TH_SYSCALL64_I386 & 0xFFFFFFFF, "abi": "i386" if i386 else "x64"}}


def render_int(arg, raw: bytes) -> dict:
    if arg.base_type == "syscall64":
        return render_syscall64(raw)
    value = _int_value(arg, raw)
    if arg.base_type == "capability":
        out: dict = {"value": value}
        if 0 <= value < len(KERNEL_CAPABILITY_NAMES):
            out["name"] = KERNEL_CAPABILITY_NAMES[value]
        return {"capability_arg": out}
    if arg.base_type in _CAP_SET_KEYS:
        return {_CAP_SET_KEYS[arg.base_type]: f"{value:016x}"}
    key = _INT_ARG_KEYS.get(arg.base_type, "int_arg")
    return {key: str(value) if key in _LONG_KEYS else value}


def render_arg(kind: int, arg, raw: bytes, resolver=None, redactor=None, binary: str = "") -> dict:
    """One entry of "args": arg is the policy's model.Arg (type, bits, sign, label).
    resolver: names network namespaces and interfaces (tetrahost.events.netns);
    redactor: a tetrahost.export.redaction.Redactor for string and char_buf
    arguments of a process whose binary is `binary`."""
    if kind in _NET_ARG_KEYS:
        out = render_net_arg(kind, raw, resolver)
    elif kind in (lib.TH_ARG_INT, lib.TH_ARG_CAP_SET, lib.TH_ARG_SYSCALL64):
        out = render_int(arg, raw)
    elif kind == lib.TH_ARG_CRED:
        out = {"process_credentials_arg": render_cred(raw)}
    elif kind == lib.TH_ARG_USER_NS:
        out = {"user_ns_arg": _user_ns(_decode("struct th_user_ns", raw))}
    elif kind in (lib.TH_ARG_BUF_KERNEL, lib.TH_ARG_BUF_USER, lib.TH_ARG_IOV_ITER):
        out = render_buf(raw, None if redactor is None else (lambda data: redactor.data(binary, data)))
    elif kind in KOBJ_KINDS:
        out = render_kobj(kind, raw)
    elif kind in (lib.TH_ARG_STR_KERNEL, lib.TH_ARG_STR_USER):
        text = _text(raw)
        out = {"string_arg": text if redactor is None else redactor.text(binary, text)}
    else:
        out = {_PATH_ARG_KEYS.get(kind, "path_arg"): {"path": _text(raw)}}
    if arg.label:
        out["label"] = arg.label
    return out


def render_return(hook, retval: int, raw: bytes = b"", resolver=None) -> dict:
    """"return" of a return probe: returnArg's type as an argument of that type
    (the kernel side already cut the value to the type's width, and read a
    sock/socket into raw)."""
    ret = hook.return_arg
    if ret is not None and raw and ret.base_type in ("sock", "socket"):
        return render_net_arg(lib.TH_ARG_SOCK, raw, resolver)
    if ret is None or ret.kind is not ArgKind.INTEGER:
        return {"long_arg": str(retval)}
    return render_arg(lib.TH_ARG_INT, ret, struct.pack("<q", retval))


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

    def _process_members(self, rec: HookRecord, process) -> list[str]:
        """The "process" and "parent" members as JSON text.  The process's
        rendering kept on its cache entry is reused unless the hook saw other
        namespaces (setns/unshare since its exec) or another thread."""
        ns = tuple(rec.ns)
        if process is None:     # not in the cache (e.g. its exec record was lost): what the kernel told us
            return [f'"process":{_dumps({"pid": rec.pid, "tid": rec.tid, "ns": self.base._ns_object(ns)})}']
        if ns == tuple(process.ns) and rec.tid == process.tid:
            members = [f'"process":{self.base.process_json(process)}']
        else:
            p = self.base.process_dict(process)      # a new dict: its two fields can be replaced
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
            members = {"process": {"pid": rec.pid, "tid": rec.tid, "ns": base._ns_object(tuple(rec.ns))}}
        else:
            p = self._process_dict(process)
            if tuple(rec.ns) != tuple(process.ns) or rec.tid != process.tid:
                p = {**p, "ns": base._ns_object(tuple(rec.ns)), "tid": rec.tid}
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
            render_arg(kind, arg, raw, self.netns if kind in _NET_ARG_KEYS else None, base.redactor, binary)
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
            if kind in _NET_ARG_KEYS:
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
