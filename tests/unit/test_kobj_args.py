"""Kernel-object arguments (kiocb, iov_iter, bpf_attr, bpf_map, perf_event,
module, load_info) and string selectors on a net_device: validation, what
they compile to, and their rendering in Tetragon's shape (checked with
Tetragon's schema)."""
import base64
import json
import pathlib

import pytest
from test_argtypes import arg, buf_bytes, compiled, load_hook

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export import conformance
from tetrahost.export.arg_json import render_arg
from tetrahost.export.kobj_json import tainted_names
from tetrahost.policy import load_path, load_text
from tetrahost.policy.compile import compile_hook

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance" / "tetragon-examples"


def record(ctype: str, **fields) -> bytes:
    """A slot's bytes as the kernel side fills it (csrc/events.h)."""
    r = ffi.new(f"{ctype} *")
    for name, value in fields.items():
        if isinstance(value, bytes):
            ffi.memmove(getattr(r, name), value, len(value))
        else:
            setattr(r, name, value)
    return bytes(ffi.buffer(r))


def bpf_attr_bytes(prog_type=2, insn_cnt=2, name=b"th_probe") -> bytes:
    return record("struct th_bpf_attr", prog_type=prog_type, insn_cnt=insn_cnt, prog_name=name)


def module_bytes(name=b"nf_tables", taints=0, flags=0) -> bytes:
    return record("struct th_module", name=name, taints=taints, flags=flags)


# ---- validation and compiling --------------------------------------------------------

@pytest.mark.parametrize("path, kinds", [
    ("bpf.yaml", [[lib.TH_ARG_BPF_ATTR], [lib.TH_ARG_PERF_EVENT], [lib.TH_ARG_BPF_MAP], [lib.TH_ARG_BPF_MAP]]),
    ("host-changes/monitor-kernel-modules.yaml",
     [[lib.TH_ARG_STR_KERNEL], [lib.TH_ARG_FILE, lib.TH_ARG_INT], [lib.TH_ARG_MODULE], [lib.TH_ARG_MODULE]]),
    ("host-changes/monitor-signed-kernel-modules.yaml",
     [[lib.TH_ARG_STR_KERNEL], [lib.TH_ARG_FILE, lib.TH_ARG_INT], [lib.TH_ARG_NONE, lib.TH_ARG_LOAD_INFO]]),
    ("tty.yaml", [[lib.TH_ARG_KIOCB, lib.TH_ARG_IOV_ITER]]),
    ("dev_hard_start_xmit.yaml", [[lib.TH_ARG_NETDEV]]),
])
def test_tetragon_examples_are_accepted_and_compile_to_these_readers(path, kinds):
    if not EXAMPLES.is_dir():
        pytest.skip(f"conformance corpus not found at {EXAMPLES}")
    result = load_path(EXAMPLES / path)
    assert result.ok, [e.render() for e in result.errors]
    hooks = result.policies[0].hooks
    assert [list(compile_hook(h, 1, HostNamespaces.unknown()).arg_kinds) for h in hooks] == kinds


def test_net_device_name_matchers_are_prefixes_ending_in_its_nul():
    """The kernel side counts a net_device name's NUL in its length (the rest
    of the device's tuple follows the name in its slot): Equal "lo" is the
    prefix "lo\\0", which "lo0" does not have; Postfix values end in the NUL."""
    out = compiled("""
kprobes:
- call: dev_hard_start_xmit
  args:
  - index: 1
    type: net_device
  selectors:
  - matchArgs:
    - index: 1
      operator: NotEqual
      values: ["lo", "eth0"]
  - matchArgs:
    - index: 1
      operator: Prefix
      values: ["veth"]
  - matchArgs:
    - index: 1
      operator: Postfix
      values: ["0"]
""")
    sel0, sel1, sel2 = (out.config.selectors[i].args[0] for i in range(3))
    assert (sel0.op, sel0.negate, sel0.arg) == (lib.TH_MATCH_PREFIX, 1, 0)
    assert out.str_equal == []
    assert sorted(v for set_id, v in out.str_prefix if set_id == sel0.set_id) == [b"eth0\0", b"lo\0"]
    assert (sel1.op, sel1.negate) == (lib.TH_MATCH_PREFIX, 0)
    assert [v for set_id, v in out.str_prefix if set_id == sel1.set_id] == [b"veth"]
    assert sel2.op == lib.TH_MATCH_POSTFIX
    assert [v for set_id, v in out.str_postfix if set_id == sel2.set_id] == [b"0\0"]


def _errors(spec: str) -> list[str]:
    text = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"
            "  kprobes:\n  - call: f\n" + spec)
    return [e.render() for e in load_text(text, file="p.yaml").errors]


def test_net_device_values_and_operators_are_checked():
    netdev = "    args:\n    - index: 0\n      type: net_device\n    selectors:\n    - matchArgs:\n      - index: 0\n"
    assert _errors(netdev + '        operator: Equal\n        values: ["a-very-long-name0"]\n') == [
        'p.yaml:15: spec.kprobes[0].selectors[0].matchArgs[0].values[0]: "a-very-long-name0" is 17 bytes long; '
        "an interface name has at most 15, so it never matches"]
    assert _errors(netdev + '        operator: DAddr\n        values: ["10.0.0.0/8"]\n') == [
        "p.yaml:14: spec.kprobes[0].selectors[0].matchArgs[0].operator: operator DAddr cannot be used on "
        "argument 0 of type net_device (operators for net_device: Equal, NotEqual, Prefix, NotPrefix, "
        "Postfix, NotPostfix)"]


@pytest.mark.parametrize("type_name", ["bpf_attr", "module", "load_info", "kiocb", "iov_iter"])
def test_kernel_objects_are_reported_not_filtered(type_name):
    spec = (f"    args:\n    - index: 0\n      type: {type_name}\n    selectors:\n    - matchArgs:\n"
            '      - index: 0\n        operator: Equal\n        values: ["x"]\n')
    assert _errors(spec) == [
        f"p.yaml:14: spec.kprobes[0].selectors[0].matchArgs[0].operator: operator Equal cannot be used on "
        f"argument 0 of type {type_name} (a {type_name} argument cannot be filtered)"]


def test_max_data_on_iov_iter_only_and_no_kernel_objects_in_uprobes():
    assert load_hook("kprobes:\n- call: tty_write\n  args:\n  - index: 1\n    type: iov_iter\n    maxData: true\n")
    assert _errors("    args:\n    - index: 0\n      type: file\n      maxData: true\n") == [
        "p.yaml:11: spec.kprobes[0].args[0].maxData: maxData only applies to char_buf and iov_iter arguments"]
    uprobe = ("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n  uprobes:\n"
              "  - path: /bin/true\n    symbols: [main]\n    args:\n    - index: 0\n      type: bpf_map\n")
    assert [e.render() for e in load_text(uprobe, file="p.yaml").errors] == [
        "p.yaml:11: spec.uprobes[0].args[0].type: argument type \"bpf_map\" is a kernel object; a uprobe reads a "
        "user-space call's arguments: integers, string or char_buf"]


# ---- rendering ------------------------------------------------------------------------

@pytest.mark.parametrize("type_name, kind, raw, expected", [
    ("bpf_attr", lib.TH_ARG_BPF_ATTR, bpf_attr_bytes(),
     {"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_KPROBE", "InsnCnt": 2, "ProgName": "th_probe"}}),
    ("bpf_attr", lib.TH_ARG_BPF_ATTR, bpf_attr_bytes(prog_type=999, insn_cnt=0, name=b""),
     {"bpf_attr_arg": {"ProgType": "999"}}),
    ("bpf_map", lib.TH_ARG_BPF_MAP,
     record("struct th_bpf_map", map_type=1, key_size=4, value_size=8, max_entries=1024, map_name=b"counts"),
     {"bpf_map_arg": {"MapType": "BPF_MAP_TYPE_HASH", "KeySize": 4, "ValueSize": 8, "MaxEntries": 1024,
                      "MapName": "counts"}}),
    ("perf_event", lib.TH_ARG_PERF_EVENT,
     record("struct th_perf_event", type=6, config=1 << 40, probe_offset=0, kprobe_func=b"do_sys_open"),
     {"perf_event_arg": {"KprobeFunc": "do_sys_open", "Type": "PERF_TYPE_MAX", "Config": str(1 << 40)}}),
    ("perf_event", lib.TH_ARG_PERF_EVENT, record("struct th_perf_event", type=8, probe_offset=16),
     {"perf_event_arg": {"Type": "8", "ProbeOffset": "16"}}),
    ("module", lib.TH_ARG_MODULE, module_bytes(taints=4096 | 8192),
     {"module_arg": {"name": "nf_tables", "tainted": ["TAINT_OUT_OF_TREE_MODULE", "TAINT_UNSIGNED_MODULE"]}}),
    ("module", lib.TH_ARG_MODULE, module_bytes(name=b"", taints=1), {"module_arg": {}}),
    ("load_info", lib.TH_ARG_LOAD_INFO,
     module_bytes(name=b"dummy", flags=lib.TH_MODULE_HAS_SIG | lib.TH_MODULE_SIG_OK),
     {"module_arg": {"name": "dummy", "signature_ok": True}}),
    ("load_info", lib.TH_ARG_LOAD_INFO, module_bytes(name=b"dummy"),
     {"module_arg": {"name": "dummy", "signature_ok": False}}),
    ("kiocb", lib.TH_ARG_KIOCB, b"/dev/pts/3", {"file_arg": {"path": "/dev/pts/3"}}),
    ("iov_iter", lib.TH_ARG_IOV_ITER, buf_bytes(b"ls -l\r", 6), {"bytes_arg": base64.b64encode(b"ls -l\r").decode()}),
    ("iov_iter", lib.TH_ARG_IOV_ITER, buf_bytes(b"x" * 252, 5000),
     {"truncated_bytes_arg": {"bytes_arg": base64.b64encode(b"x" * 252).decode(), "orig_size": "5000"}}),
])
def test_rendered_as_tetragon_and_parses_with_its_schema(type_name, kind, raw, expected):
    out = render_arg(kind, arg(type_name), raw)
    assert out == expected
    event = {"process_kprobe": {"function_name": "f", "args": [out], "action": "KPROBE_ACTION_POST"},
             "node_name": "h"}
    assert conformance.validate_line(json.dumps(event).encode()) == []


def test_taint_names_use_tetragons_enum_values_and_the_schema_knows_them():
    every = 1 | 2 | 4 | 1024 | 4096 | 8192 | 32768 | 262144
    names = tainted_names(every | 8 | 16)       # bits Tetragon's enum has no name for are left out
    assert names == list(conformance.enum_values("TaintedBitsType")[1:])
    assert tainted_names(0) == []
