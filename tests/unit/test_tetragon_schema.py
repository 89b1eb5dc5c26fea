"""Every kind of line the renderers make parses with Tetragon's schema
(tetrahost/export/conformance.py over tetragon_schema.json), and the
checker itself rejects what strict protobuf JSON parsing rejects."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from test_argtypes import arg, buf_bytes, cred_bytes, int_bytes
from test_hook_json_network import TCP4, FakeResolver, tuple_bytes
from test_kobj_args import bpf_attr_bytes, module_bytes
from test_proccache import NS, exec_rec, seeded_cache

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import ExitRecord, HookRecord
from tetrahost.export import conformance
from tetrahost.export.filters import ExportPipeline
from tetrahost.export.hook_json import HookEventRenderer
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.policy.model import Arg

REPO = conformance.SCHEMA_PATH.parents[2]


def test_checked_in_schema_is_what_the_generator_makes():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_tetragon_schema.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert conformance.tetragon_version() == "cilium/tetragon@0059fa662dfb6cc7feea6612d80d04318ff71ded"
    assert conformance.enum_values("CapabilitiesType")[:3] == ("CAP_CHOWN", "DAC_OVERRIDE", "CAP_DAC_READ_SEARCH")


GOOD = {"process_exec": {"process": {"exec_id": "x", "pid": 1, "start_time": "2024-05-01T10:20:30.123Z",
                                     "cap": {"effective": ["CAP_SYS_ADMIN"]}}},
        "node_name": "h", "time": "2024-05-01T10:20:30Z"}


@pytest.mark.parametrize("mutate, error", [
    (lambda e: e["process_exec"]["process"].update(cgroup="/"), "process_exec.process.cgroup: unknown field"),
    (lambda e: e["process_exec"]["process"]["cap"].update(effective=["CAP_DAC_OVERRIDE"]),
     "'CAP_DAC_OVERRIDE' is not a value of enum CapabilitiesType"),
    (lambda e: e["process_exec"]["process"].update(pid="1"), "process_exec.process.pid: expected a uint32 number"),
    (lambda e: e["process_exec"]["process"].update(pid=-1), "expected a uint32 number"),
    (lambda e: e.update(time="2024-05-01 10:20:30"), "time: expected an RFC 3339 UTC timestamp"),
    (lambda e: e.update(rate_limit_info={"number_of_dropped_process_events": 3}),
     "several members: process_exec, rate_limit_info"),
    (lambda e: e.update(rate_limit_info={"number_of_dropped_process_events": "3"}) or e.pop("process_exec"), None),
    (lambda e: e.update(rate_limit_info={"number_of_dropped_process_events": 3}) or e.pop("process_exec"),
     "expected a uint64 as a JSON string"),
    (lambda e: e.pop("process_exec"), "no event kind"),
    (lambda e: e.update(tetrahost={"selector": 1}), "host fields present"),
])
def test_checker_rejects_what_strict_parsing_rejects(mutate, error):
    event = json.loads(json.dumps(GOOD))
    assert conformance.validate_event(event) == []
    mutate(event)
    errors = conformance.validate_event(event)
    if error is None:
        assert errors == []
    else:
        assert any(error in e for e in errors), errors


def test_kprobe_argument_is_a_oneof_and_host_member_is_checked_too():
    ev = {"process_kprobe": {"args": [{"int_arg": 1, "string_arg": "a", "label": "x"}],
                             "action": "KPROBE_ACTION_POST"}, "node_name": "h"}
    assert any("oneof of KprobeArgument" in e for e in conformance.validate_event(ev))
    ev["process_kprobe"]["args"] = [{"int_arg": 1, "label": "x"}]
    ev["tetrahost"] = {"selector": 1, "process": {"unit": "a.service"}}
    assert conformance.validate_event(ev, allow_host_fields=True) == []
    ev["tetrahost"]["colour"] = "red"
    assert conformance.validate_event(ev, allow_host_fields=True) == ["tetrahost.colour: unknown field of tetrahost.Host"]


# ---- the renderers' output, every event kind, host fields off and on ------------------------------

POLICY_ARGS = [("int", lib.TH_ARG_INT, int_bytes(-3)), ("uint32", lib.TH_ARG_INT, int_bytes(7)),
               ("size_t", lib.TH_ARG_INT, int_bytes(1 << 40)), ("int64", lib.TH_ARG_INT, int_bytes(-(1 << 40))),
               ("capability", lib.TH_ARG_INT, int_bytes(1)), ("kernel_cap_t", lib.TH_ARG_CAP_SET, int_bytes(3)),
               ("string", lib.TH_ARG_STR_USER, b"/etc/shadow"),
               ("char_buf", lib.TH_ARG_BUF_USER, buf_bytes(b"hi", 2)),
               ("char_buf", lib.TH_ARG_BUF_USER, buf_bytes(b"x" * 8, 70000)),
               ("char_buf", lib.TH_ARG_BUF_USER, buf_bytes(b"", 9, fault=True)),
               ("file", lib.TH_ARG_FILE, b"/etc/passwd"), ("linux_binprm", lib.TH_ARG_BPRM, b"/tmp/xmrig"),
               ("cred", lib.TH_ARG_CRED, cred_bytes(euid=0, securebits=0b10100, caps=(3, 3, 0),
                                                    user_ns=(0, 0, 0, 4026531837))),
               ("sock", lib.TH_ARG_SOCK, tuple_bytes(**TCP4)),
               ("sockaddr", lib.TH_ARG_SOCKADDR, tuple_bytes(family=2, saddr="10.0.0.1", sport=80)),
               ("skb", lib.TH_ARG_SKB, tuple_bytes(family=2, protocol=17, saddr="10.1.0.1", daddr="10.1.0.2",
                                                   sport=1, dport=2, len=9, flags=lib.TH_SOCK_HAS_PORTS)),
               ("net_device", lib.TH_ARG_NETDEV, tuple_bytes(ifname="eth0", ifindex=2, netns=4026532177)),
               ("syscall64", lib.TH_ARG_SYSCALL64, int_bytes(41 | lib.TH_SYSCALL64_I386)),
               ("bpf_attr", lib.TH_ARG_BPF_ATTR, bpf_attr_bytes()),
               ("load_info", lib.TH_ARG_LOAD_INFO, module_bytes(taints=4096)),
               ("kiocb", lib.TH_ARG_KIOCB, b"/dev/pts/1"),
               ("iov_iter", lib.TH_ARG_IOV_ITER, buf_bytes(b"id\n", 3))]


def hook_state(kind: str, message="m", tags=("t",)):
    args = [arg(t, label=f"a{i}" if i % 2 else "") for i, (t, _, _) in enumerate(POLICY_ARGS)]
    hook = SimpleNamespace(kind=kind, name="security_file_open", subsystem="syscalls", event="sys_enter_openat",
                           args=args, message=message, tags=tags, syscall_list=None,
                           return_arg=Arg(index=0, type="int", base_type="int", kind=arg("int").kind, bits=32,
                                          signed=True))
    return SimpleNamespace(hook=hook, policy=SimpleNamespace(name="pol"),
                           plan=SimpleNamespace(method="kprobe"),
                           compiled=SimpleNamespace(arg_kinds=[k for _, k, _ in POLICY_ARGS]))


def records():
    raws = [raw for _, _, raw in POLICY_ARGS]
    base = dict(ktime=3_000_000, pid=200, tid=200, hook_id=1, selector=1, ns=NS, args=raws)
    yield HookRecord(action=lib.TH_ACTION_POST, action_arg=0, **base)
    yield HookRecord(action=lib.TH_ACTION_SIGKILL, action_arg=9, signal_failed=True, path_unresolved=True, **base)
    yield HookRecord(action=lib.TH_ACTION_SIGKILL, action_arg=9, monitor=True, **base)
    yield HookRecord(action=lib.TH_ACTION_OVERRIDE, action_arg=-1, retval=-13, sock_owner=True, **base)
    yield HookRecord(action=lib.TH_ACTION_POST, action_arg=0, **dict(base, pid=4242, tid=4242))   # not in the cache
    yield HookRecord(action=lib.TH_ACTION_NOTIFY_ENFORCER, action_arg=9, compat=True, **base)


@pytest.mark.parametrize("host_fields, process_fields", [(False, False), (False, True), (True, True)])
def test_every_rendered_kind_parses_with_tetragons_schema(fake_proc, host_fields, process_fields):
    """process_fields: export.process_cred and process_ns (cap, creds, ns in process objects)."""
    cache = seeded_cache(fake_proc)
    r = TetragonJSON("host1", host_fields=host_fields, process_cred=process_fields, process_ns=process_fields)
    lines = [r.render(cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat", args=[b"a b", b""])))]
    hooks = HookEventRenderer(r, cache, netns=FakeResolver())
    for kind in ("kprobe", "lsm", "tracepoint"):
        lines += [hooks.render(rec, hook_state(kind)) for rec in records()]
    lines.append(r.render(cache.handle(ExitRecord(4_000_000, 200, 200, 9, 0))))
    cache.handle(exec_rec(201, 100, 5_000_000))
    lines.append(r.render(cache.handle(ExitRecord(6_000_000, 201, 201, 0, 3))))
    out = []
    p = ExportPipeline([SimpleNamespace(write_events=out.extend, close=lambda: None)], rate_limit=1,
                       node_name="host1")
    p.write_events([("{}", SimpleNamespace(kind="process_exec"))] * 3)
    p.report()
    lines.append(out[-1][0])
    kinds = {next(iter(json.loads(line))) for line in lines}
    assert kinds == {"process_exec", "process_exit", "process_kprobe", "process_lsm", "process_tracepoint",
                     "rate_limit_info"}
    for line in lines:
        assert conformance.validate_line(line, allow_host_fields=host_fields) == [], line
        assert ("tetrahost" in json.loads(line)) == (host_fields and "rate_limit_info" not in line)
    if host_fields:     # the extras are all there, in the host member
        killed = json.loads(lines[2])["tetrahost"]
        assert killed["signal"] == "SIGKILL" and killed["signal_failed"] and killed["path_unresolved"]
        assert killed["args"]["9"] == {"read_error": "CharBufErrorPageFault"}
        assert killed["args"]["13"]["netns_name"] == "th-a" and killed["attach"] == "kprobe"
        assert killed["args"]["19"] == {"signature_checked": False}     # load_info, no CONFIG_MODULE_SIG
        assert json.loads(lines[3])["tetrahost"]["monitor_action"] == "KPROBE_ACTION_SIGKILL"


def test_unknown_capability_bits_and_non_utf8_still_parse(fake_proc):
    cache = ProcessCache("h")
    ev = cache.handle(exec_rec(9, 1, 10, binary=b"/tmp/\xff", args=[b"\x80"]))
    ev.process.caps = type(ev.process.caps)(permitted=(1 << 63) | 2, effective=2, inheritable=0)
    line = TetragonJSON("h", process_cred=True).render(ev)
    assert conformance.validate_line(line) == []
    assert json.loads(line)["process_exec"]["process"]["cap"]["permitted"] == ["DAC_OVERRIDE"]
    assert ffi is not None
