"""Kernel-object arguments as Tetragon renders them (its KprobeArgument
members, tetrahost/export/tetragon_schema.json):

    bpf_attr    {"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 2, "ProgName": "probe"}}
    bpf_map     {"bpf_map_arg": {"MapType": "BPF_MAP_TYPE_HASH", "KeySize": 4, "ValueSize": 8,
                                 "MaxEntries": 1024, "MapName": "counts"}}
    perf_event  {"perf_event_arg": {"KprobeFunc": "do_sys_open", "Type": "PERF_TYPE_TRACEPOINT",
                                    "Config": "0", "ProbeOffset": "0"}}
    module      {"module_arg": {"name": "nf_tables", "tainted": ["TAINT_OUT_OF_TREE_MODULE"]}}
    load_info   the same, with "signature_ok" (Tetragon sets it for every load_info)

Type names are the kernel's enum names; a number the table does not know is
written as its decimal digits (Tetragon's fallback).  Zero numbers and empty
strings are left out, as protobuf's JSON mapping leaves out default values;
Config and ProbeOffset are uint64s and so JSON strings.  "tainted" lists
Tetragon's TaintedBitsType names of the module's taint bits, by the values
Tetragon's enum gives them.  The records are those of csrc/events.h.
"""
from __future__ import annotations

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.text import bytes_to_text

# enum bpf_prog_type / enum bpf_map_type (include/uapi/linux/bpf.h), in value order
_PROG_TYPES = (
    "UNSPEC", "SOCKET_FILTER", "KPROBE", "SCHED_CLS", "SCHED_ACT", "TRACEPOINT", "XDP", "PERF_EVENT",
    "CGROUP_SKB", "CGROUP_SOCK", "LWT_IN", "LWT_OUT", "LWT_XMIT", "SOCK_OPS", "SK_SKB", "CGROUP_DEVICE",
    "SK_MSG", "RAW_TRACEPOINT", "CGROUP_SOCK_ADDR", "LWT_SEG6LOCAL", "LIRC_MODE2", "SK_REUSEPORT",
    "FLOW_DISSECTOR", "CGROUP_SYSCTL", "RAW_TRACEPOINT_WRITABLE", "CGROUP_SOCKOPT", "TRACING",
    "STRUCT_OPS", "EXT", "LSM", "SK_LOOKUP", "SYSCALL", "NETFILTER",
)
_MAP_TYPES = (
    "UNSPEC", "HASH", "ARRAY", "PROG_ARRAY", "PERF_EVENT_ARRAY", "PERCPU_HASH", "PERCPU_ARRAY",
    "STACK_TRACE", "CGROUP_ARRAY", "LRU_HASH", "LRU_PERCPU_HASH", "LPM_TRIE", "ARRAY_OF_MAPS",
    "HASH_OF_MAPS", "DEVMAP", "SOCKMAP", "CPUMAP", "XSKMAP", "SOCKHASH", "CGROUP_STORAGE",
    "REUSEPORT_SOCKARRAY", "PERCPU_CGROUP_STORAGE", "QUEUE", "STACK", "SK_STORAGE", "DEVMAP_HASH",
    "STRUCT_OPS", "RINGBUF", "INODE_STORAGE", "TASK_STORAGE", "BLOOM_FILTER", "USER_RINGBUF",
    "CGRP_STORAGE", "ARENA",
)
# enum perf_type_id (include/uapi/linux/perf_event.h); dynamic PMUs (kprobe,
# uprobe) have numbers of their own, written as digits
_PERF_TYPES = ("HARDWARE", "SOFTWARE", "TRACEPOINT", "HW_CACHE", "RAW", "BREAKPOINT", "MAX")
# Tetragon's TaintedBitsType: name -> the value its enum gives it (a mask of the
# module's taints); TAINT_UNSET (0) is never listed
_TAINTS = (("TAINT_PROPRIETARY_MODULE", 1), ("TAINT_FORCED_MODULE", 2), ("TAINT_FORCED_UNLOAD_MODULE", 4),
           ("TAINT_STAGED_MODULE", 1024), ("TAINT_OUT_OF_TREE_MODULE", 4096),
           ("TAINT_UNSIGNED_MODULE", 8192), ("TAINT_KERNEL_LIVE_PATCH_MODULE", 32768),
           ("TAINT_TEST_MODULE", 262144))


def _decode(ctype: str, raw: bytes):
    """The record (cdata), zero-filled past the bytes given."""
    out = ffi.new(f"{ctype} *")
    data = bytes(raw[:ffi.sizeof(ctype)])
    ffi.memmove(out, data, len(data))
    return out


def _enum_name(names: tuple[str, ...], prefix: str, value: int) -> str:
    return prefix + names[value] if 0 <= value < len(names) else str(value)


def _nonzero(**fields) -> dict:
    """Protobuf's JSON mapping: default values (0, "") are left out."""
    return {k: v for k, v in fields.items() if v not in (0, "", "0")}


def _text(cdata_array) -> str:
    return bytes_to_text(ffi.string(cdata_array))


def tainted_names(taints: int) -> list[str]:
    return [name for name, bit in _TAINTS if taints & bit]


def render_bpf_attr(raw: bytes) -> dict:
    a = _decode("struct th_bpf_attr", raw)
    return {"bpf_attr_arg": _nonzero(ProgType=_enum_name(_PROG_TYPES, "BPF_PROG_TYPE_", a.prog_type),
                                     InsnCnt=a.insn_cnt, ProgName=_text(a.prog_name))}


def render_bpf_map(raw: bytes) -> dict:
    m = _decode("struct th_bpf_map", raw)
    return {"bpf_map_arg": _nonzero(MapType=_enum_name(_MAP_TYPES, "BPF_MAP_TYPE_", m.map_type),
                                    KeySize=m.key_size, ValueSize=m.value_size,
                                    MaxEntries=m.max_entries, MapName=_text(m.map_name))}


def render_perf_event(raw: bytes) -> dict:
    p = _decode("struct th_perf_event", raw)
    return {"perf_event_arg": _nonzero(KprobeFunc=_text(p.kprobe_func),
                                       Type=_enum_name(_PERF_TYPES, "PERF_TYPE_", p.type),
                                       Config=str(p.config), ProbeOffset=str(p.probe_offset))}


def render_module(raw: bytes, load_info: bool) -> dict:
    m = _decode("struct th_module", raw)
    body: dict = {}
    name = _text(m.name)
    if name:            # Tetragon leaves out name and taints when it read no name
        body["name"] = name
        tainted = tainted_names(m.taints)
        if tainted:
            body["tainted"] = tainted
    if load_info:
        body["signature_ok"] = bool(m.flags & lib.TH_MODULE_SIG_OK)
    return {"module_arg": body}


def render_kobj(kind: int, raw: bytes) -> dict:
    """One of the record kinds TH_ARG_BPF_ATTR..TH_ARG_LOAD_INFO."""
    if kind == lib.TH_ARG_BPF_ATTR:
        return render_bpf_attr(raw)
    if kind == lib.TH_ARG_BPF_MAP:
        return render_bpf_map(raw)
    if kind == lib.TH_ARG_PERF_EVENT:
        return render_perf_event(raw)
    return render_module(raw, kind == lib.TH_ARG_LOAD_INFO)


KOBJ_KINDS = frozenset({lib.TH_ARG_BPF_ATTR, lib.TH_ARG_BPF_MAP, lib.TH_ARG_PERF_EVENT,
                        lib.TH_ARG_MODULE, lib.TH_ARG_LOAD_INFO})


def signature_known(raw: bytes) -> bool:
    """A load_info's signature was checked (CONFIG_MODULE_SIG): host field."""
    return bool(_decode("struct th_module", raw).flags & lib.TH_MODULE_HAS_SIG)
