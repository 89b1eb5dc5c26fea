"""Kernel-object arguments on the kernel the tests run on: Tetragon's example
policies bpf.yaml, monitor-kernel-modules.yaml, monitor-signed-kernel-modules.yaml,
tty.yaml and dev_hard_start_xmit.yaml, loaded unmodified.

Everywhere: `tetrahost policy check` accepts and compiles every hook, and the
entry program they use verifies with every reader in it (where the kernel
has kprobes or fentry, `policy check` loads each hook's program itself).
Where the kernel has kprobes or fentry, each type is observed from a process
of the test's own, by what it did: a BPF program and map loaded under a
unique name (bpf_attr_arg, bpf_map_arg), a kprobe perf event opened on a
named function (perf_event_arg), a write and a writev to a pty
(file_arg of the kiocb, bytes_arg of the iov_iter), UDP on lo seen by a
net_device Equal "lo" selector and not by NotEqual "lo", and the dummy
module loaded and removed (module_arg).  Elsewhere those are "not
applicable" (kernel_expect).
"""
from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import pytest

from agent_harness import REPO, RunningAgent, policy_events, policy_text, require_root_and_bpf
from kernel_expect import features, not_applicable
from verifier_budget import verified_insns

pytestmark = pytest.mark.kernel

EXAMPLES = REPO.parent / "shared" / "conformance" / "tetragon-examples"
FILES = ("bpf.yaml", "host-changes/monitor-kernel-modules.yaml",
         "host-changes/monitor-signed-kernel-modules.yaml", "tty.yaml", "dev_hard_start_xmit.yaml")
TAG = uuid.uuid4().hex[:8]
NAME = f"thk_{TAG}"                   # a BPF object name: at most 15 characters
NOT_LO = f"th-xmit-not-lo-{TAG}"


def _paths() -> list[str]:
    if not EXAMPLES.is_dir():
        pytest.fail(f"the conformance corpus is missing: {EXAMPLES}")
    return [str(EXAMPLES / f) for f in FILES]


def _observable() -> bool:
    f = features()
    return f.kprobe or f.fentry


def _kallsyms() -> set[str]:
    with open("/proc/kallsyms") as f:
        return {line.split()[2] for line in f}


def test_policy_check_compiles_every_hook_and_the_readers_verify():
    require_root_and_bpf()
    proc = subprocess.run([sys.executable, "-m", "tetrahost.cli.main", "policy", "check", "-o", "json",
                           *_paths()], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [f["ok"] for f in report["files"]] == [True] * len(FILES)
    hooks = report["hooks"]
    assert len(hooks) == 13
    if _observable():
        known = _kallsyms()
        checked = [h for h in hooks if h["hook"].split()[1] in known]     # "kprobe NAME [(return)]"
        assert len(checked) >= 10, hooks        # every hook but an inlined or renamed function
        for h in checked:
            assert h["verified"] and h["method"].startswith(("kprobe", "fentry")), h
        return
    for h in hooks:       # compiled (a compile error would be named), planned, not attachable here
        assert not h["verified"] and len(h["failed"]) == 1 and "no kprobes and no fentry" in h["failed"][0], h
    # the program these hooks use loads here, every argument reader in it
    assert verified_insns("th_kprobe") > 0        # refused: raises; 0: not reported (before 5.16)


# ---- observed ------------------------------------------------------------------------

BPF_LOADER = r"""
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
name = sys.argv[1].encode()
insns = ctypes.create_string_buffer(struct.pack("<BBhi", 0xb7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0))
lic = ctypes.create_string_buffer(b"GPL")
# BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name
prog = ctypes.create_string_buffer(struct.pack("<IIQQIIQII16s", 1, 2, ctypes.addressof(insns),
                                               ctypes.addressof(lic), 0, 0, 0, 0, 0, name), 128)
if libc.syscall(321, 5, prog, 128) < 0:
    sys.exit(f"BPF_PROG_LOAD: errno {ctypes.get_errno()}")
# BPF_MAP_CREATE: map_type ARRAY, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name
amap = ctypes.create_string_buffer(struct.pack("<IIIIIII16s", 2, 4, 8, 3, 0, 0, 0, name), 128)
if libc.syscall(321, 0, amap, 128) < 0:
    sys.exit(f"BPF_MAP_CREATE: errno {ctypes.get_errno()}")
# a kprobe perf event (perf's kprobe PMU): config1 points at the function's name
func = ctypes.create_string_buffer(sys.argv[3].encode())
attr = ctypes.create_string_buffer(struct.pack("<IIQQQQQIIQQ", int(sys.argv[2]), 72, 0, 0, 0, 0, 1, 0, 0,
                                               ctypes.addressof(func), 0), 72)
if libc.syscall(298, attr, -1, 0, -1, 0) < 0:
    sys.exit(f"perf_event_open: errno {ctypes.get_errno()}")
"""

PTY_WRITER = r"""
import os, pty, sys
master, slave = pty.openpty()
print(os.ttyname(slave), flush=True)
payload = sys.argv[1].encode()
os.write(slave, payload)
os.writev(slave, [payload + b"-v", b"-second"])
"""

UDP_ON_LO = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(b"x", ("127.0.0.1", 9))
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    require_root_and_bpf()
    if not _observable():
        not_applicable("no kprobes and no fentry: the hooks of these policies cannot attach (verified by loading)")
    d = tmp_path_factory.mktemp("kobj-policies")
    not_lo = d / "not-lo.yaml"
    not_lo.write_text(policy_text(NOT_LO, """
  kprobes:
  - call: dev_hard_start_xmit
    syscall: false
    args:
    - index: 1
      type: net_device
    selectors:
    - matchArgs:
      - index: 1
        operator: NotEqual
        values: ["lo"]
"""))
    args = [a for p in [*_paths(), str(not_lo)] for a in ("--policy", p)]
    a = RunningAgent(tmp_path_factory.mktemp("kobj-agent"), *args)
    yield a
    a.stop()


def _of_pid(bodies: list[dict], pid: int, function: str | None = None) -> list[dict]:
    return [b for b in bodies if b["process"].get("pid") == pid and function in (None, b.get("function_name"))]


def test_bpf_attr_bpf_map_and_perf_event(agent):
    pmu = pathlib.Path("/sys/bus/event_source/devices/kprobe/type")
    if not pmu.exists():
        not_applicable("perf has no kprobe PMU")
    proc = subprocess.Popen([sys.executable, "-c", BPF_LOADER, NAME, pmu.read_text().strip(), "security_file_open"])
    assert proc.wait(timeout=60) == 0
    agent.wait_events(lambda e: any(a.get("bpf_attr_arg", {}).get("ProgName") == NAME
                                    for a in e.get("process_kprobe", {}).get("args", [])), 1)
    bodies = policy_events(agent, "bpf")
    (load,) = _of_pid(bodies, proc.pid, "bpf_check")
    assert load["args"] == [{"bpf_attr_arg": {"ProgType": "BPF_PROG_TYPE_SOCKET_FILTER", "InsnCnt": 2,
                                              "ProgName": NAME}}]
    maps = [b for b in _of_pid(bodies, proc.pid) if b["function_name"].startswith("security_bpf_map_")]
    assert [m["args"] for m in maps] == [[{"bpf_map_arg": {"MapType": "BPF_MAP_TYPE_ARRAY", "KeySize": 4,
                                                           "ValueSize": 8, "MaxEntries": 3, "MapName": NAME}}]]
    (perf,) = _of_pid(bodies, proc.pid, "security_perf_event_alloc")
    pmu_type = pmu.read_text().strip()
    # a dynamic PMU's number, in digits; the first one (6) has a name in
    # Tetragon's table of perf types: PERF_TYPE_MAX
    assert perf["args"] == [{"perf_event_arg": {"KprobeFunc": "security_file_open",
                                                "Type": "PERF_TYPE_MAX" if pmu_type == "6" else pmu_type}}]


def test_kiocb_file_and_iov_iter_bytes_of_a_pty_write(agent):
    payload = f"th-tty-{TAG}"
    proc = subprocess.Popen([sys.executable, "-c", PTY_WRITER, payload], stdout=subprocess.PIPE, text=True)
    tty = proc.stdout.readline().strip()
    assert proc.wait(timeout=60) == 0 and tty.startswith("/dev/pts/")
    writes = _of_pid(policy_events(agent, "tty", 2), proc.pid, "tty_write")
    first = [w["args"] for w in writes if base64.b64decode(w["args"][1].get("bytes_arg", "")).startswith(
        payload.encode())]
    assert first == [[{"file_arg": {"path": tty}}, {"bytes_arg": base64.b64encode(payload.encode()).decode()}],
                     [{"file_arg": {"path": tty}},
                      {"bytes_arg": base64.b64encode(f"{payload}-v".encode()).decode()}]]


def test_net_device_name_selectors(agent):
    proc = subprocess.Popen([sys.executable, "-c", UDP_ON_LO])
    assert proc.wait(timeout=60) == 0
    agent.wait_events(lambda e: e.get("process_kprobe", {}).get("policy_name") == "dev-hard-start-xmit"
                      and e["process_kprobe"]["process"].get("pid") == proc.pid, 1)
    on_lo = _of_pid(policy_events(agent, "dev-hard-start-xmit"), proc.pid)
    assert on_lo and all(b["args"] == [{"net_dev_arg": {"name": "lo"}}] for b in on_lo)
    assert _of_pid(policy_events(agent, NOT_LO), proc.pid) == []          # NotEqual "lo" held in the kernel
    assert all(b["args"][0]["net_dev_arg"]["name"] != "lo" for b in policy_events(agent, NOT_LO))


def test_module_load_and_removal(agent):
    if not os.path.exists("/proc/modules"):
        not_applicable("kernel without loadable modules (CONFIG_MODULES)")
    release = os.uname().release
    found = list(pathlib.Path("/lib/modules", release).glob("kernel/drivers/net/dummy.ko*"))
    if not found or not shutil.which("modprobe"):
        not_applicable(f"no loadable dummy module for {release}")
    if pathlib.Path("/sys/module/dummy").exists():
        subprocess.run(["modprobe", "-r", "dummy"], check=True)
    subprocess.run(["modprobe", "dummy", "numdummies=0"], check=True, timeout=60)
    subprocess.run(["modprobe", "-r", "dummy"], check=True, timeout=60)

    def named(policy: str, function: str) -> list[dict]:
        return [b for b in policy_events(agent, policy) if b["function_name"] == function
                and b["args"][-1].get("module_arg", {}).get("name") == "dummy"]

    agent.wait_events(lambda e: e.get("process_kprobe", {}).get("function_name") == "free_module", 1)
    for function in ("do_init_module", "free_module"):
        (event,) = named("monitor-kernel-modules", function)
        assert event["args"] == [{"module_arg": {"name": "dummy"}}]     # in-tree: no taint
    if "find_module_sections" in _kallsyms():       # inlined on some kernels
        (event,) = named("monitor-signed-kernel-modules", "find_module_sections")
        assert set(event["args"][0]["module_arg"]) == {"name", "signature_ok"}
        assert isinstance(event["args"][0]["module_arg"]["signature_ok"], bool)
