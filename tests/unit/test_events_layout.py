"""csrc/events.h is compiled twice, by clang for BPF and by cffi for Python.
These tests compare the two layouts (from the BPF object's BTF) so a change
that makes them drift fails here, not in a decoder at run time."""
import json
import pathlib
import shutil
import subprocess

import pytest

from tetrahost.bpf.native import ffi

BPF_DIR = pathlib.Path(__file__).resolve().parents[2] / "build" / "bpf"
RECORDS = ["th_header", "th_creds", "th_caps", "th_exec", "th_fork", "th_exit", "th_hook_event",
           "th_hook_config", "th_selector", "th_arg_matcher", "th_ns_matcher", "th_str_key"]
# objects that exchange records with user space, and what each must carry
REQUIRED = {
    "process.bpf.o": ["th_header", "th_exec", "th_fork", "th_exit"],
    "generic.bpf.o": ["th_header", "th_hook_event", "th_hook_config", "th_selector", "th_str_key"],
}


def btf_structs(obj: pathlib.Path) -> dict:
    if not shutil.which("bpftool"):
        pytest.skip("bpftool is not installed (apt-get install bpftool)")
    if not obj.is_file():
        pytest.fail(f"{obj} is not built: run `make bpf`")
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "-j"],
                         check=True, capture_output=True, text=True).stdout
    return {t["name"]: t for t in json.loads(out)["types"] if t["kind"] == "STRUCT" and "name" in t}


def mismatches(btf: dict, name: str) -> list[str]:
    """Differences between a BTF struct and cffi's view of the same struct."""
    ctype = f"struct {name}"
    found = []
    if btf["size"] != ffi.sizeof(ctype):
        found.append(f"sizeof({ctype}): BTF {btf['size']}, cffi {ffi.sizeof(ctype)}")
    btf_names = [m["name"] for m in btf["members"]]
    cffi_names = [f for f, _ in ffi.typeof(ctype).fields]
    if btf_names != cffi_names:
        found.append(f"{ctype} members: BTF {btf_names}, cffi {cffi_names}")
    for m in btf["members"]:
        if m["name"] in cffi_names and m["bits_offset"] != 8 * ffi.offsetof(ctype, m["name"]):
            found.append(f"{ctype}.{m['name']}: BTF bit {m['bits_offset']}, cffi byte {ffi.offsetof(ctype, m['name'])}")
    return found


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_record_layouts_match_btf(name):
    structs = btf_structs(BPF_DIR / name)
    for record in REQUIRED[name]:
        assert record in structs, f"{name}: struct {record} missing from BTF"
    for record in RECORDS:
        if record in structs:
            assert mismatches(structs[record], record) == [], f"{name}: struct {record}"


def test_layout_check_detects_a_drift():
    """The comparison must be able to fail: shifted members are reported."""
    fork = btf_structs(BPF_DIR / "process.bpf.o")["th_fork"]
    shifted = dict(fork, members=[dict(m, bits_offset=m["bits_offset"] + 32) for m in fork["members"]])
    assert len(mismatches(shifted, "th_fork")) == len(fork["members"])
    assert mismatches(dict(fork, size=fork["size"] + 8), "th_fork")
