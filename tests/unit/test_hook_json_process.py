"""The process and parent of a policy event: spliced from the renderings the
cache entries keep, and the same JSON as building them from dicts."""
import json
from types import SimpleNamespace

from test_proccache import NS, exec_rec, seeded_cache

from tetrahost.bpf.native import lib
from tetrahost.events.records import HookRecord
from tetrahost.export.hook_json import HookEventRenderer
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.policy import load_text

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: p
spec:
  kprobes:
  - call: security_file_open
    args:
    - {index: 0, type: int}
"""


def hook_state():
    policy = load_text(POLICY, file="p.yaml").policies[0]
    return SimpleNamespace(hook=policy.hooks[0], policy=policy, plan=None,
                           compiled=SimpleNamespace(arg_kinds=[lib.TH_ARG_INT]))


def record(pid, tid, ns):
    return HookRecord(ktime=2_000_000, pid=pid, tid=tid, hook_id=1, selector=0, action=lib.TH_ACTION_POST,
                      action_arg=0, ns=ns, args=[(7).to_bytes(8, "little")])


def test_process_and_parent_are_the_cached_renderings(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat"))
    base = TetragonJSON("host1", process_cred=True, process_ns=True)
    out = json.loads(HookEventRenderer(base, cache).render(record(200, 200, NS), hook_state()))
    kp = out["process_kprobe"]
    assert list(kp)[:3] == ["process", "parent", "function_name"]
    assert kp["process"] == json.loads(json.dumps(base.process_dict(cache.get_pid(200))))
    assert kp["parent"]["binary"] == "/usr/bin/bash" and kp["args"] == [{"int_arg": 7}]
    assert out["node_name"] == "host1" and kp["policy_name"] == "p"


def test_other_namespaces_or_thread_are_the_kernels(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat"))
    other = (99,) + NS[1:]
    hooks = HookEventRenderer(TetragonJSON("host1", process_cred=True, process_ns=True), cache)
    p = json.loads(hooks.render(record(200, 201, other), hook_state()))["process_kprobe"]["process"]
    assert p["tid"] == 201 and p["ns"]["uts"]["inum"] == 99 and p["binary"] == "/usr/bin/cat"
    out = json.loads(hooks.render(record(4242, 4242, NS), hook_state()))
    assert out["process_kprobe"]["process"]["pid"] == 4242 and "parent" not in out["process_kprobe"]
    assert out["process_kprobe"]["process"]["ns"]["uts"]["inum"] == NS[0]


def test_without_process_ns_a_hook_event_has_no_namespaces_but_the_kernels_thread(fake_proc):
    # export.process_ns off (Tetragon's default): no "ns" anywhere, the line and
    # the dict alike, whether the hook saw the exec's namespaces or others.
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat"))
    hooks = HookEventRenderer(TetragonJSON("host1"), cache)
    for rec in (record(200, 200, NS), record(200, 201, (99,) + NS[1:]), record(4242, 4243, NS)):
        line = hooks.render(rec, hook_state())
        as_dict = hooks.event_dict(rec, hook_state(), cache.get_pid(rec.pid))
        for p in (json.loads(line)["process_kprobe"]["process"], as_dict["process_kprobe"]["process"]):
            assert "ns" not in p and "cap" not in p and "process_credentials" not in p
            assert (p["pid"], p["tid"]) == (rec.pid, rec.tid)
