"""Uprobe hooks below the front end: what they compile to (arguments read
from the caller's memory), how they are planned, how their event renders
(Tetragon's process_uprobe, no "action": it is a host field)."""
import dataclasses
import os
import json
import textwrap
from types import SimpleNamespace

import pytest

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

HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: up\nspec:\n"
ALL = KernelFeatures(**{f.name: True for f in dataclasses.fields(KernelFeatures)})
NONE = KernelFeatures(**{f.name: False for f in dataclasses.fields(KernelFeatures)})
SPEC = """
uprobes:
- path: /usr/local/bin/app
  {where}
  args:
  - {{index: 0, type: int}}
  - {{index: 1, type: string}}
  - {{index: 2, type: char_buf, sizeArgIndex: 4}}
  - {{index: 3, type: size_t}}
  selectors:
  - matchArgs:
    - {{index: 1, operator: Equal, values: ["killme"]}}
    matchActions:
    - {{action: Sigkill}}
"""


def hook_of(where: str = "symbols: [th_secret_check]"):
    text = HEADER + textwrap.indent(textwrap.dedent(SPEC.format(where=where)).strip("\n"), "  ") + "\n"
    result = load_text(text, file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return result.policies[0], result.policies[0].hooks[0]


def test_pointers_are_read_from_user_memory():
    _, hook = hook_of()
    compiled = compile_hook(hook, 7, HostNamespaces.unknown())
    assert compiled.arg_kinds == [lib.TH_ARG_INT, lib.TH_ARG_STR_USER, lib.TH_ARG_BUF_USER, lib.TH_ARG_INT]
    cfg = compiled.config
    assert list(cfg.arg_src)[:4] == [0, 1, 2, 3] and cfg.arg_offset[2] == 3   # the buffer's size: args[3]
    assert not cfg.flags & lib.TH_CFG_SYSCALL_WRAPPER
    assert cfg.selectors[0].action == lib.TH_ACTION_SIGKILL and compiled.uses_enforcement


def test_planned_as_a_uprobe_only_where_the_probe_found_uprobes():
    _, hook = hook_of()
    (plan,) = attach_candidates(hook, ALL, enforces=True, overrides=False)
    assert (plan.program, plan.target) == ("th_uprobe", "/usr/local/bin/app:th_secret_check")
    assert plan.method.startswith("uprobe /usr/local/bin/app:th_secret_check (symbol")
    _, by_offset = hook_of("offsets: [4409]")
    assert attach_candidates(by_offset, ALL, True, False)[0].target == "/usr/local/bin/app:0x1139"
    # kprobes, fentry... do not stand in for a uprobe
    with pytest.raises(AttachError, match="uprobes are not usable on this kernel"):
        attach_candidates(hook, dataclasses.replace(ALL, uprobe=False), True, False)
    with pytest.raises(AttachError, match="uprobes are not usable"):
        attach_candidates(hook, NONE, False, False)


def render(fake_proc, where="symbols: [th_secret_check]", action=lib.TH_ACTION_SIGKILL):
    policy, hook = hook_of(where)
    cache = seeded_cache(fake_proc)
    cache.handle(exec_rec(200, 100, 1_000_000, binary=b"/usr/local/bin/app"))
    buf = bytearray(lib.TH_BUF_MAX + 4)
    buf[:2] = b"hi"
    buf[lib.TH_BUF_MAX:] = (2).to_bytes(4, "little")
    rec = HookRecord(ktime=2_000_000, pid=200, tid=200, hook_id=1, selector=0, action=action,
                     action_arg=9, ns=NS, args=[(7).to_bytes(8, "little"), b"killme", bytes(buf),
                                                (2).to_bytes(8, "little")])
    hs = SimpleNamespace(hook=hook, policy=policy, plan=None, compiled=SimpleNamespace(
        arg_kinds=[lib.TH_ARG_INT, lib.TH_ARG_STR_USER, lib.TH_ARG_BUF_USER, lib.TH_ARG_INT]))
    return HookEventRenderer(TetragonJSON("host1", host_fields=True), cache).render(rec, hs)


def test_event_is_tetragons_process_uprobe(fake_proc):
    line = render(fake_proc)
    assert validate_line(line.encode() + b"\n", allow_host_fields=True) == []
    event = json.loads(line)
    body = event["process_uprobe"]
    assert (body["path"], body["symbol"], body["policy_name"]) == ("/usr/local/bin/app", "th_secret_check", "up")
    assert body["args"] == [{"int_arg": 7}, {"string_arg": "killme"}, {"bytes_arg": "aGk="}, {"size_arg": "2"}]
    assert "action" not in body and "function_name" not in body
    assert event["tetrahost"]["action"] == "KPROBE_ACTION_SIGKILL" and event["tetrahost"]["signal"] == "SIGKILL"
    compact = format_event(event)
    assert "uprobe" in compact and "/usr/local/bin/app th_secret_check 7 killme 2" in compact
    assert "SIGKILL" in compact


def test_event_of_a_file_offset_names_the_offset(fake_proc):
    event = json.loads(render(fake_proc, "offsets: [4409]", action=lib.TH_ACTION_POST))
    body = event["process_uprobe"]
    assert body["offset"] == "4409" and "symbol" not in body
    assert validate_line(json.dumps(event).encode() + b"\n", allow_host_fields=True) == []
    assert "/usr/local/bin/app +0x1139" in format_event(event)


def test_only_a_regular_file_is_handed_to_libbpf(tmp_path):
    """libbpf opens the binary to read its symbols: a FIFO would block the agent."""
    from tetrahost.bpf import BpfError
    from tetrahost.sensors.generic import check_uprobe_binary

    fifo, regular = tmp_path / "fifo", tmp_path / "app"
    os.mkfifo(fifo)
    regular.write_bytes(b"\x7fELF")
    check_uprobe_binary(str(regular))
    with pytest.raises(BpfError, match="not a regular file"):
        check_uprobe_binary(str(fifo))
    with pytest.raises(BpfError, match="No such file"):
        check_uprobe_binary(str(tmp_path / "missing"))
