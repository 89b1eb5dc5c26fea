"""cred, user_namespace, char_buf, capability and kernel_cap_t arguments:
how they compile for the kernel side, how their slots render as Tetragon's
JSON, and the slot layouts against the BPF object's BTF."""
import base64
import json
import pathlib
import shutil
import subprocess
import textwrap

import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export.arg_json import buf_read_failed, render_arg, render_buf, render_cred
from tetrahost.policy import load_text
from tetrahost.policy.compile import CompileError, compile_hook
from tetrahost.policy.model import Arg
from tetrahost.policy.vocab import SUPPORTED_ARG_TYPES

BPF_DIR = pathlib.Path(__file__).resolve().parents[2] / "build" / "bpf"
HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"


def load_hook(spec: str, hook: int = 0):
    result = load_text(HEADER + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n", file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return result.policies[0].hooks[hook]


def compiled(spec: str, hook: int = 0):
    return compile_hook(load_hook(spec, hook), 7, HostNamespaces.unknown())


def arg(type_name: str, label: str = "") -> Arg:
    info = SUPPORTED_ARG_TYPES[type_name]
    return Arg(index=0, type=type_name, base_type=info.base, kind=info.kind, bits=info.bits,
               signed=info.signed, label=label)


# ---- compiling ------------------------------------------------------------

def test_cred_user_ns_capability_and_cap_set_kinds():
    out = compiled("""
kprobes:
- call: cap_capable
  syscall: false
  args:
  - {index: 0, type: cred}
  - {index: 1, type: user_namespace}
  - {index: 2, type: capability}
- call: cap_capset
  syscall: false
  args:
  - {index: 2, type: kernel_cap_t}
  - {index: 3, type: cap_inheritable}
  - {index: 4, type: cap_permitted}
""")
    assert out.arg_kinds == [lib.TH_ARG_CRED, lib.TH_ARG_USER_NS, lib.TH_ARG_INT]
    assert list(out.config.arg_src)[:3] == [0, 1, 2]
    caps = compiled("""
kprobes:
- call: cap_capset
  syscall: false
  args:
  - {index: 2, type: kernel_cap_t}
  - {index: 3, type: cap_inheritable}
  - {index: 4, type: cap_permitted}
""")
    assert caps.arg_kinds == [lib.TH_ARG_CAP_SET] * 3


def test_char_buf_memory_follows_syscall_and_size_source_is_the_1_based_index():
    user = compiled("""
kprobes:
- call: sys_write
  syscall: true
  args:
  - {index: 0, type: int}
  - {index: 1, type: char_buf, sizeArgIndex: 3}
  - {index: 2, type: size_t}
""")
    assert user.arg_kinds == [lib.TH_ARG_INT, lib.TH_ARG_BUF_USER, lib.TH_ARG_INT]
    assert user.config.arg_src[1] == 1 and user.config.arg_offset[1] == 2
    kernel = compiled("""
kprobes:
- call: security_inode_setxattr
  syscall: false
  args:
  - {index: 3, type: char_buf, sizeArgIndex: 5}
""")
    assert kernel.arg_kinds == [lib.TH_ARG_BUF_KERNEL]
    assert kernel.config.arg_src[0] == 3 and kernel.config.arg_offset[0] == 4


def test_return_copy_needs_a_return_probe_and_no_matcher_on_its_bytes():
    body = """
kprobes:
- call: sys_read
  syscall: true
  {ret}
  args:
  - {{index: 0, type: int}}
  - {{index: 1, type: char_buf, returnCopy: true}}
  {sel}
"""
    with pytest.raises(CompileError, match=r"^args\[1\]\.returnCopy needs a return probe \(return: true\)$"):
        compile_hook(load_hook(body.format(ret="", sel="")), 1, HostNamespaces.unknown())
    matcher = "selectors:\n  - matchArgs:\n    - {index: 1, operator: Prefix, values: [x]}"
    with pytest.raises(CompileError, match=r"args\[1\] is filled by the call \(returnCopy\)"):
        compile_hook(load_hook(body.format(ret="return: true", sel=matcher)), 1, HostNamespaces.unknown())
    cfg = compile_hook(load_hook(body.format(ret="return: true", sel="")), 1, HostNamespaces.unknown()).config
    assert cfg.ret_copy_arg == 1 and cfg.flags & lib.TH_CFG_RETURN
    assert cfg.arg_kind[1] == lib.TH_ARG_BUF_USER


def test_char_buf_on_a_tracepoint_is_rejected_precisely():
    hook = load_hook("""
tracepoints:
- subsystem: syscalls
  event: sys_enter_write
  args:
  - {index: 0, type: char_buf, sizeArgIndex: 2}
  - {index: 1, type: size_t}
""")

    class Field:
        def __init__(self, name, offset, size, pointer=False):
            self.name, self.offset, self.size, self.pointer = name, offset, size, pointer
            self.data_loc = self.inline_array = False
            self.type = "x"
    fields = [Field("buf", 16, 8, True), Field("count", 24, 8)]
    with pytest.raises(CompileError, match="char_buf arguments of tracepoints are not supported yet"):
        compile_hook(hook, 1, HostNamespaces.unknown(), fields=fields)


def test_kernel_cap_t_matches_as_an_integer_with_cap_names():
    out = compiled("""
kprobes:
- call: cap_capset
  syscall: false
  args:
  - {index: 2, type: kernel_cap_t}
  - {index: 0, type: capability}
  selectors:
  - matchArgs:
    - {index: 2, operator: Mask, values: ["CAP_SYS_ADMIN", "CAP_NET_RAW"]}
    - {index: 0, operator: Equal, values: ["CAP_SYS_ADMIN"]}
""")
    m0, m1 = out.config.selectors[0].args[0], out.config.selectors[0].args[1]
    assert (m0.op, m0.nvalues, list(m0.values)[:2]) == (lib.TH_MATCH_MASK, 2, [1 << 21, 1 << 13])
    assert (m1.op, m1.nvalues, m1.values[0]) == (lib.TH_MATCH_EQUAL, 1, 21)


def test_conformance_examples_compile():
    corpus = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "tetragon-examples"
    if not corpus.is_dir():
        pytest.skip(f"conformance corpus not found at {corpus}")
    for name in ("kprobe_commit_creds.yaml", "process-credentials/process-creds-changed.yaml",
                 "process-credentials/process-creds-installed.yaml", "tty_54.yaml"):
        from tetrahost.policy import load_file
        for policy in load_file(corpus / name):
            for hook in policy.hooks:
                compile_hook(hook, 1, HostNamespaces.from_proc())     # raises if not compiled


# ---- rendering --------------------------------------------------------------

def cred_bytes(**kw) -> bytes:
    c = ffi.new("struct th_cred *")
    for name in ("uid", "gid", "euid", "egid", "suid", "sgid", "fsuid", "fsgid"):
        setattr(c.ids, name, kw.get(name, 0))
    c.securebits = kw.get("securebits", 0)
    c.flags = kw.get("flags", 0)
    c.caps.effective, c.caps.permitted, c.caps.inheritable = kw.get("caps", (0, 0, 0))
    c.user_ns.level, c.user_ns.uid, c.user_ns.gid, c.user_ns.inum = kw.get("user_ns", (0, 0, 0, 4026531837))
    return bytes(ffi.buffer(c))


def test_cred_is_tetragon_process_credentials_arg():
    raw = cred_bytes(uid=1000, gid=1000, euid=0, egid=60, suid=0, sgid=60, fsuid=0, fsgid=60,
                     securebits=0b10100, caps=(1 << 21 | 1, 1 << 21 | 1 | 2, 0), user_ns=(0, 0, 0, 4026531837))
    out = render_arg(lib.TH_ARG_CRED, arg("cred", label="new"), raw)
    assert out == {"process_credentials_arg": {
        "uid": 1000, "gid": 1000, "euid": 0, "egid": 60, "suid": 0, "sgid": 60, "fsuid": 0, "fsgid": 60,
        "securebits": ["SecBitNoSetUidFixup", "SecBitKeepCaps"],
        "caps": {"permitted": ["CAP_CHOWN", "DAC_OVERRIDE", "CAP_SYS_ADMIN"],     # Tetragon's enum spelling
                 "effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"]},
        "user_ns": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": 4026531837, "is_host": True}}},
        "label": "new"}
    assert list(out["process_credentials_arg"]) == ["uid", "gid", "euid", "egid", "suid", "sgid", "fsuid",
                                                    "fsgid", "securebits", "caps", "user_ns"]   # proto order


def test_cred_in_a_child_user_namespace_and_unread_cred():
    out = render_cred(cred_bytes(uid=0, user_ns=(1, 1000, 1001, 4026532500)))
    assert "securebits" not in out and out["caps"] == {}
    assert out["user_ns"] == {"level": 1, "uid": 1000, "gid": 1001, "ns": {"inum": 4026532500}}
    assert render_cred(cred_bytes(flags=lib.TH_CRED_READ_FAILED)) == {}


def test_user_namespace_is_user_ns_arg():
    u = ffi.new("struct th_user_ns *", {"level": 2, "uid": 1000, "gid": 100, "inum": 4026532999})
    assert render_arg(lib.TH_ARG_USER_NS, arg("user_namespace"), bytes(ffi.buffer(u))) == \
        {"user_ns_arg": {"level": 2, "uid": 1000, "gid": 100, "ns": {"inum": 4026532999}}}


def buf_bytes(data: bytes, size: int, fault: bool = False) -> bytes:
    b = ffi.new("struct th_char_buf *")
    ffi.memmove(b.data, data, len(data))
    b.size = size | (1 << lib.TH_BUF_FAULT_SHIFT if fault else 0)
    return bytes(ffi.buffer(b))


def test_char_buf_is_base64_bytes_arg_or_truncated_with_the_original_size():
    assert render_buf(buf_bytes(b"hello\n", 6)) == {"bytes_arg": base64.b64encode(b"hello\n").decode()}
    assert render_buf(buf_bytes(b"", 0)) == {"bytes_arg": ""}
    assert render_buf(buf_bytes(b"\0\xff", 2)) == {"bytes_arg": "AP8="}          # binary, NULs kept
    head = bytes(range(252))
    out = render_buf(buf_bytes(head, 70000))
    assert out == {"truncated_bytes_arg": {"bytes_arg": base64.b64encode(head).decode(), "orig_size": "70000"}}
    assert render_buf(buf_bytes(b"", 10, fault=True)) == {"bytes_arg": ""}        # read_error: a host field
    assert buf_read_failed(buf_bytes(b"", 10, fault=True)) and not buf_read_failed(buf_bytes(b"x", 1))
    line = json.dumps(render_arg(lib.TH_ARG_BUF_USER, arg("char_buf", label="data"), buf_bytes(b"x", 1)))
    assert json.loads(line) == {"bytes_arg": "eA==", "label": "data"}


def int_bytes(v: int) -> bytes:
    return (v & (1 << 64) - 1).to_bytes(8, "little")


def test_integer_keys_follow_tetragon_per_type():
    cases = [("int", -1, {"int_arg": -1}), ("int8", 0xff, {"int_arg": -1}), ("uint8", 0x1ff, {"uint_arg": 255}),
             ("uint16", 65535, {"uint_arg": 65535}), ("uint32", -1, {"uint_arg": 4294967295}),
             # 64-bit integers are JSON strings in protobuf's JSON mapping
             ("size_t", 4096, {"size_arg": "4096"}), ("uint64", -1, {"size_arg": str((1 << 64) - 1)}),
             ("long", -5, {"long_arg": "-5"}), ("int64", 7, {"long_arg": "7"})]
    for type_name, value, want in cases:
        assert render_arg(lib.TH_ARG_INT, arg(type_name), int_bytes(value)) == want, type_name


def test_capability_and_capability_sets():
    assert render_arg(lib.TH_ARG_INT, arg("capability"), int_bytes(21)) == \
        {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}}
    assert render_arg(lib.TH_ARG_INT, arg("capability"), int_bytes(99)) == {"capability_arg": {"value": 99}}
    full = (1 << 41) - 1
    assert render_arg(lib.TH_ARG_CAP_SET, arg("kernel_cap_t"), int_bytes(full)) == \
        {"kernel_cap_t_arg": "000001ffffffffff"}
    assert render_arg(lib.TH_ARG_CAP_SET, arg("cap_effective"), int_bytes(1 << 21)) == \
        {"cap_effective_arg": "0000000000200000"}
    assert render_arg(lib.TH_ARG_CAP_SET, arg("cap_permitted"), int_bytes(0)) == \
        {"cap_permitted_arg": "0000000000000000"}


# ---- layout ---------------------------------------------------------------

def test_arg_slot_structs_match_btf():
    if not shutil.which("bpftool"):
        pytest.skip("bpftool is not installed")
    obj = BPF_DIR / "generic.bpf.o"
    if not obj.is_file():
        pytest.fail(f"{obj} is not built: run `make bpf`")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "-j"], check=True, capture_output=True,
                         text=True).stdout
    structs = {t["name"]: t for t in json.loads(out)["types"] if t["kind"] == "STRUCT" and "name" in t}
    for name in ("th_cred", "th_user_ns", "th_char_buf", "th_creds", "th_caps"):
        btf, ctype = structs[name], f"struct {name}"
        assert btf["size"] == ffi.sizeof(ctype), name
        assert [m["name"] for m in btf["members"]] == [f for f, _ in ffi.typeof(ctype).fields], name
        for m in btf["members"]:
            assert m["bits_offset"] == 8 * ffi.offsetof(ctype, m["name"]), (name, m["name"])
    # each fits an argument slot
    for ctype in ("struct th_cred", "struct th_user_ns", "struct th_char_buf"):
        assert ffi.sizeof(ctype) <= lib.TH_STR_SLOT
    assert ffi.offsetof("struct th_char_buf", "size") == lib.TH_STR_MAX   # data is what string matchers read
