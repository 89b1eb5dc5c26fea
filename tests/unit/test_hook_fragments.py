"""Hook lines from kept fragments are the lines a whole render writes, and a
group is never reused past what its key covers."""
from types import SimpleNamespace

import pytest
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
  - call: sys_openat
    syscall: true
    message: "opened"
    tags: ["files"]
    args:
    - {index: 0, type: int}
    - {index: 1, type: string}
    - {index: 2, type: int, label: flags}
    selectors:
    - matchActions:
      - action: Post
    - matchActions:
      - action: Sigkill
"""
INT, STR = lib.TH_ARG_INT, lib.TH_ARG_STR_USER


def hook_state(policy_text=POLICY):
    policy = load_text(policy_text, file="frag.yaml").policies[0]
    return SimpleNamespace(hook=policy.hooks[0], policy=policy, plan=None, sensor=None,
                           compiled=SimpleNamespace(arg_kinds=[INT, STR, INT, 0, 0]))


def rec(ktime, fd=3, path=b"/etc/passwd", flags=0, pid=200, tid=200, ns=NS, selector=0,
        action=lib.TH_ACTION_POST, monitor=False, syscall_nr=257):
    return HookRecord(ktime=ktime, pid=pid, tid=tid, hook_id=1, selector=selector, action=action,
                      action_arg=0, ns=ns, args=[fd.to_bytes(8, "little", signed=True), path,
                                                 flags.to_bytes(8, "little"), b"", b""],
                      monitor=monitor, syscall_nr=syscall_nr)


def renderers(fake_proc, redactor=None, process_fields=False):
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/bin/cat", args=[b"--password=hunter2"]))
    base = TetragonJSON("host1", process_cred=process_fields, process_ns=process_fields)
    base.redactor = redactor
    return cache, HookEventRenderer(base, cache), HookEventRenderer(base, cache, fragments=False)


VARIANTS = [
    dict(),
    dict(fd=-100, path=b"/tmp/\xff\x00weird\"quote\\", flags=0o100),
    dict(path=b"caf\xc3\xa9 \x7f"),
    dict(tid=201),                               # another thread: "tid" of the process object
    dict(ns=(99,) + NS[1:]),                      # namespaces changed since the exec
    dict(selector=1, action=lib.TH_ACTION_SIGKILL),
    dict(selector=1, action=lib.TH_ACTION_SIGKILL, monitor=True),
    dict(pid=4242, tid=4242),                     # a process the cache does not know
    dict(syscall_nr=2),
]


@pytest.mark.parametrize("redact, process_fields", [(False, False), (True, False), (False, True)])
def test_fragment_lines_are_whole_render_lines(fake_proc, redact, process_fields):
    """process_fields: export.process_cred and process_ns (the namespaces a hook saw in the line)."""
    redactor = Redactor.from_config([{"redact": ["(?:--password=)([^ ]+)", "(?:weird)(.+)"]}], True) if redact else None
    cache, fast, slow = renderers(fake_proc, redactor, process_fields)
    hs = hook_state()
    t = 2_000_000_000
    for round_ in range(3):               # groups made in round 0, reused after
        for i, v in enumerate(VARIANTS):
            t += 1_234_567 * (i + 1) + round_
            r = rec(t, **v)
            assert fast.render(r, hs) == slow.render(r, hs), v
    assert fast.fragments._groups             # the fast path was taken


def test_a_new_exec_makes_a_new_group(fake_proc):
    """Same pid, new image: the line names the new binary (the group key holds the cache entry)."""
    cache, fast, slow = renderers(fake_proc)
    hs = hook_state()
    first = fast.render(rec(2_000_000_000), hs)
    cache.handle(exec_rec(200, 100, 1_500_000_000, binary=b"/usr/bin/vim"))
    second = fast.render(rec(2_000_000_001), hs)
    assert '"binary":"/usr/bin/cat"' in first and '"binary":"/usr/bin/vim"' in second
    assert second == slow.render(rec(2_000_000_001), hs)


def test_a_reloaded_policy_makes_a_new_group(fake_proc):
    cache, fast, _ = renderers(fake_proc)
    fast.render(rec(2_000_000_000), hook_state())
    other = hook_state(POLICY.replace('message: "opened"', 'message: "changed"'))
    assert '"message":"changed"' in fast.render(rec(2_000_000_001), other)


def test_records_with_return_stack_or_ima_take_the_whole_render(fake_proc):
    _, fast, _ = renderers(fake_proc)
    hs = hook_state()
    for extra in (dict(retval=0), dict(kernel_stack_id=1), dict(user_stack_id=1), dict(ima_algo=4)):
        r = rec(2_000_000_000)
        for k, v in extra.items():
            setattr(r, k, v)
        assert not fast.fragments.applies(r), extra
