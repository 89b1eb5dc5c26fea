"""spec.usdts: what the front end accepts (one hook per point, Set with its
argument and value) and rejects with file:line: field.path: message; what a
hook compiles and plans to (th_usdt, th_usdt_set only where
bpf_probe_write_user loads); how its event renders (Tetragon's process_usdt)."""
import dataclasses
import json
from types import SimpleNamespace

import pytest

from policytest_helpers import errors_of, policy_text
from test_proccache import NS, exec_rec, seeded_cache

from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.records import HookRecord
from tetrahost.export.compact import format_event
from tetrahost.export.conformance import validate_line
from tetrahost.export.hook_json import HookEventRenderer
from tetrahost.export.tetragon_json import TetragonJSON
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook
from tetrahost.sensors.attach import AttachError, attach_candidates
from tetrahost.sensors.probe import KernelFeatures

ALL = KernelFeatures(**{f.name: True for f in dataclasses.fields(KernelFeatures)})
GOOD = """
usdts:
- path: /usr/local/bin/app
  provider: app
  name: request__start
  args:
  - index: 0
    type: int32
  - index: 1
    type: string
  selectors:
  - matchArgs:
    - index: 1
      operator: Equal
      values: ["killme"]
    matchActions:
    - action: Sigkill
  - matchArgs:
    - index: 0
      operator: Equal
      values: ["7"]
    matchActions:
    - action: Set
      argIndex: 0
      argValue: -32
  message: "request"
  tags: ["app"]
"""


def policy_and_hook(body: str = GOOD):
    result = load_text(policy_text(body), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    (policy,) = result.policies
    (hook,) = policy.hooks
    return policy, hook


def test_a_point_with_its_args_selectors_and_set():
    _, hook = policy_and_hook()
    assert (hook.kind, hook.path, hook.provider, hook.usdt_name, hook.name) == (
        "usdt", "/usr/local/bin/app", "app", "request__start", "app:request__start")
    assert [(a.index, a.type) for a in hook.args] == [(0, "int32"), (1, "string")]
    (set_,) = hook.selectors[1].match_actions
    assert (set_.action, set_.arg_index, set_.arg_value) == ("Set", 0, -32)
    assert (hook.message, hook.tags, hook.describe()) == ("request", ("app",), "usdt /usr/local/bin/app:app:request__start")


def test_compiles_to_user_memory_arguments_and_the_set_action():
    _, hook = policy_and_hook()
    compiled = compile_hook(hook, 3, HostNamespaces.unknown())
    assert compiled.arg_kinds == [lib.TH_ARG_INT, lib.TH_ARG_STR_USER]
    sel = compiled.config.selectors[1]
    assert (sel.action, sel.action_arg, sel.set_value) == (lib.TH_ACTION_SET, 0, -32)
    assert compiled.uses_set and compiled.uses_enforcement


def test_planned_with_the_writing_program_only_where_it_loads():
    _, hook = policy_and_hook()
    (plan,) = attach_candidates(hook, ALL, enforces=True, overrides=False)
    assert (plan.program, plan.target) == ("th_usdt_set", "/usr/local/bin/app:app:request__start")
    with pytest.raises(AttachError, match="the Set action needs bpf_probe_write_user, which this kernel refuses"):
        attach_candidates(hook, dataclasses.replace(ALL, probe_write_user=False), True, False)
    with pytest.raises(AttachError, match="uprobes are not usable on this kernel"):
        attach_candidates(hook, dataclasses.replace(ALL, uprobe=False), True, False)
    _, plain = policy_and_hook(GOOD.replace("action: Set\n      argIndex: 0\n      argValue: -32", "action: Post"))
    (plan,) = attach_candidates(plain, dataclasses.replace(ALL, probe_write_user=False), True, False)
    assert plan.program == "th_usdt"


def test_no_selectors_posts_every_point():
    _, hook = policy_and_hook("usdts:\n- {path: /usr/bin/python3, provider: python, name: function__entry}")
    assert hook.selectors == () and hook.args == ()


@pytest.mark.parametrize("body, expected", [
    ("usdts:\n- {provider: app, name: x}", ["p.yaml:7: spec.usdts[0].path: required field is missing"]),
    ("usdts:\n- {path: /bin/app, name: x}", ["p.yaml:7: spec.usdts[0].provider: required field is missing"]),
    ("usdts:\n- {path: /bin/app, provider: app, name: 'a b'}",
     ['p.yaml:7: spec.usdts[0].name: "a b" is not a USDT name (a C identifier, as <sys/sdt.h> writes it)']),
    ("usdts:\n- {path: app, provider: app, name: x}",
     ['p.yaml:7: spec.usdts[0].path: "app" is not an absolute path (the binary or library to probe, '
      'e.g. "/usr/bin/bash")']),
    ("usdts:\n- {path: /bin/app, provider: app, name: x, args: [{index: 0, type: file}]}",
     ['p.yaml:7: spec.usdts[0].args[0].type: argument type "file" is a kernel object; a uprobe reads a '
      "user-space call's arguments: integers, string or char_buf"]),
    ("""
     usdts:
     - path: /bin/app
       provider: app
       name: x
       selectors:
       - matchActions:
         - {action: Set, argIndex: 1, argValue: 5}
     """, ["p.yaml:12: spec.usdts[0].selectors[0].matchActions[0].argIndex: Set: argIndex 1 names no argument "
           "in args (declare the USDT argument it writes)"]),
    ("""
     usdts:
     - path: /bin/app
       provider: app
       name: x
       args: [{index: 0, type: string}]
       selectors:
       - matchActions:
         - {action: Set, argIndex: 0}
     """, ["p.yaml:13: spec.usdts[0].selectors[0].matchActions[0].argValue: required field is missing",
           "p.yaml:13: spec.usdts[0].selectors[0].matchActions[0].argIndex: Set: argument 0 is of type "
           "string; Set writes integers"]),
    ("""
     usdts:
     - path: /bin/app
       provider: app
       name: x
       selectors:
       - matchActions:
         - {action: Override, argError: -1}
     """, ["p.yaml:12: spec.usdts[0].selectors[0].matchActions[0].action: Override on a usdt (setting "
           "registers, argRegs) is not supported by tetrahost; Sigkill, Signal, Post and NoPost are"]),
    ("""
     kprobes:
     - call: fd_install
       selectors:
       - matchActions:
         - {action: Set, argIndex: 0, argValue: 1}
     """, ["p.yaml:10: spec.kprobes[0].selectors[0].matchActions[0].action: Set writes an argument of a "
           "USDT point; only spec.usdts hooks support it in tetrahost"]),
])
def test_rejected_with_file_line_and_field(body, expected):
    assert errors_of(body) == expected


def render(fake_proc, action=lib.TH_ACTION_POST, selector=0, set_failed=False):
    policy, hook = policy_and_hook()
    compiled = compile_hook(hook, 1, HostNamespaces.unknown())
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/local/bin/app"))
    rec = HookRecord(ktime=2_000_000, pid=200, tid=200, hook_id=1, selector=selector, action=action,
                     action_arg=0, ns=NS, args=[(7).to_bytes(8, "little"), b"hello"], set_failed=set_failed)
    hs = SimpleNamespace(hook=hook, policy=policy, plan=None, compiled=compiled)
    return json.loads(HookEventRenderer(TetragonJSON("host1", host_fields=True), cache).render(rec, hs))


def test_event_is_tetragons_process_usdt(fake_proc):
    event = render(fake_proc)
    assert validate_line(json.dumps(event).encode() + b"\n", allow_host_fields=True) == []
    body = event["process_usdt"]
    assert (body["path"], body["provider"], body["name"]) == ("/usr/local/bin/app", "app", "request__start")
    assert body["args"] == [{"int_arg": 7}, {"string_arg": "hello"}] and "action" not in body
    assert (body["message"], body["tags"], event["tetrahost"]["action"]) == ("request", ["app"], "KPROBE_ACTION_POST")
    assert "/usr/local/bin/app app request__start 7 hello" in format_event(event)


def test_a_set_event_names_the_argument_the_value_and_a_failed_write(fake_proc):
    event = render(fake_proc, action=lib.TH_ACTION_SET, selector=1, set_failed=True)
    assert validate_line(json.dumps(event).encode() + b"\n", allow_host_fields=True) == []
    host = event["tetrahost"]
    assert (host["set_arg"], host["set_value"], host["set_failed"]) == (0, -32, True)
    assert "action" not in host         # Tetragon's KprobeAction has no Set
