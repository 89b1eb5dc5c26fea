"""Policy hook arguments and return values as Tetragon renders them (the
"args" and "return" members of tetrahost.export.hook_json's events).

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
from tetrahost.events.text import bytes_to_text, os_text
from tetrahost.export.kobj_json import KOBJ_KINDS, render_kobj
from tetrahost.export.process_values import KERNEL_CAPABILITY_NAMES
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.policy.names import ADDRESS_FAMILIES, IP_PROTOCOLS, TCP_STATES
from tetrahost.policy.vocab import ArgKind

# enum th_arg_kind -> Tetragon's JSON key for that argument
_PATH_ARG_KEYS = {
    lib.TH_ARG_FILE: "file_arg", lib.TH_ARG_FD: "file_arg", lib.TH_ARG_PATH: "path_arg",
    lib.TH_ARG_DENTRY: "path_arg", lib.TH_ARG_BPRM: "linux_binprm_arg", lib.TH_ARG_KIOCB: "file_arg",
}
NET_ARG_KEYS = {
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
    key = NET_ARG_KEYS[kind]
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
    if kind in NET_ARG_KEYS:
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
