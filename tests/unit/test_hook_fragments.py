"""Hook event lines built from kept fragments are the lines render_full writes."""
import dataclasses
from types import SimpleNamespace

from test_proccache import NS, exec_rec, seeded_cache

from tetrahost.bpf.native import lib
from tetrahost.events.records import HookRecord
from tetrahost.export.hook_json import HookEventRenderer
from tetrahost.export.redaction import Redactor
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.policy import load_text

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: frag
spec:
  kprobes:
  - call: sys_write
    syscall: true
    message: "a write"
    tags: [t1]
    args:
    - {index: 0, type: int}
    - {index: 1, type: string}
"""


def hook_state():
    policy = load_text(POLICY, file="p.yaml").policies[0]
    return SimpleNamespace(hook=policy.hooks[0], policy=policy, plan=None,
                           compiled=SimpleNamespace(arg_kinds=[lib.TH_ARG_INT, lib.TH_ARG_STR_USER]))


def record(pid, tid, fd, text, ktime, ns=NS, action=lib.TH_ACTION_POST, monitor=False):
    return HookRecord(ktime=ktime, pid=pid, tid=tid, hook_id=3, selector=0, action=action, action_arg=9,
                      ns=tuple(ns), args=[fd.to_bytes(8, "little"), text], monitor=monitor)


def test_fragment_lines_equal_full_renderings(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat"))
    redactor = Redactor([{"redact": [r"(?:pass=)(\S+)"]}])
    base = TetragonJSON("host1", redactor=redactor)
    fast = HookEventRenderer(base, cache)
    assert fast.fragments is not None
    hs = hook_state()
    other_ns = tuple(n + 1 for n in NS)
    records = [record(200, 200, 1, b"hello", 2_000_000_123), record(200, 200, 2, b"pass=secret", 2_500_000_000),
               record(200, 200, 1, b"x\xff", 3_000_000_000), record(200, 201, 1, b"thread", 3_000_000_001),
               record(200, 200, 1, b"ns", 3_000_000_002, ns=other_ns),
               record(200, 200, 1, b"mon", 3_000_000_003, action=lib.TH_ACTION_SIGKILL, monitor=True),
               record(200, 200, 1, b"kill", 3_000_000_004, action=lib.TH_ACTION_SIGKILL),
               record(4242, 4242, 5, b"unknown process", 4_000_000_000)]
    for rec in records + records:          # the second round comes from the kept fragments
        process = cache.get_pid(rec.pid)
        assert fast.render(rec, hs, process) == fast.render_full(rec, hs, process)
    # each distinct (process, thread, namespaces, action) is one group, reused the second time
    assert len(fast.fragments._groups) == 6


def test_a_replaced_hook_state_is_not_served_old_fragments(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat"))
    r = HookEventRenderer(TetragonJSON("host1"), cache)
    old, new = hook_state(), hook_state()
    new.policy = dataclasses.replace(new.policy, name="renamed")
    rec = record(200, 200, 1, b"a", 2_000_000_000)
    assert '"policy_name":"frag"' in r.render(rec, old, cache.get_pid(200))
    assert '"policy_name":"renamed"' in r.render(rec, new, cache.get_pid(200))


def test_redaction_applies_to_fragment_lines(fake_proc):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat"))
    r = HookEventRenderer(TetragonJSON("host1", redactor=Redactor([{"redact": [r"(?:pass=)(\S+)"]}])), cache)
    hs = hook_state()
    for _ in range(2):
        line = r.render(record(200, 200, 2, b"pass=secret", 2_500_000_000), hs, cache.get_pid(200))
        assert "secret" not in line and "pass=*****" in line
