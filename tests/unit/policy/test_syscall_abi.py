"""syscall64 arguments, InMap/NotInMap on integers, 32-bit syscall list
entries and spec.enforcers: validation (file:line: field.path: message),
what they compile to, how they are planned, and how their events render."""
import dataclasses

import pytest

from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export.arg_json import render_syscall64
from tetrahost.export.hook_json import function_name
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook, enforcer_id
from tetrahost.policy.model import IntRange
from tetrahost.sensors.attach import attach_candidates, plan_attach
from tetrahost.sensors.hook_config import AttachInputs, fill_syscall_set, hook_config_cdata
from tetrahost.sensors.probe import KernelFeatures
from tetrahost.arch import SYSCALLS_I386

from policytest_helpers import errors_of, policy_text

ALL = KernelFeatures(**{f.name: True for f in dataclasses.fields(KernelFeatures)})
NO_OVERRIDE = dataclasses.replace(ALL, override_return=False)
FALLBACK = KernelFeatures(**{f.name: False for f in dataclasses.fields(KernelFeatures)} | {"raw_tracepoint": True})
I386 = lib.TH_SYSCALL64_I386

# under spec: "- name" line 7, "values" 9, "enforcers" 10, "- calls" 11, "tracepoints" 12,
# "type" of the arg 17, "matchArgs" 19, "operator" 21, the value 23, the action 25
KILLER = """
lists:
- name: dups
  type: syscalls
  values: ["sys_dup", "sys_dup2", "__ia32_sys_dup"]
{enforcers}
tracepoints:
- subsystem: raw_syscalls
  event: sys_enter
  args:
  - index: 4
    type: {type}
  selectors:
  - matchArgs:
    - index: 0
      operator: {operator}
      values:
      - "{value}"
    matchActions:
    - {action}
"""
ENFORCERS = 'enforcers:\n- calls: ["list:dups"]'
NOTIFY = "{action: NotifyEnforcer, argError: -1, argSig: 9}"


def killer(type_="syscall64", operator="InMap", value="list:dups", action=NOTIFY, enforcers=ENFORCERS):
    return KILLER.format(type=type_, operator=operator, value=value, action=action, enforcers=enforcers)


def policy_of(spec_body: str):
    result = load_text(policy_text(spec_body), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return result.policies[0]


def test_tetragon_examples_are_accepted_and_compile(conformance_dir):
    for name in ("raw_syscalls.yaml", "list-syscalls-tracepoint.yaml", "killer.yaml"):
        result = load_text((conformance_dir / "tetragon-examples" / name).read_text(), file=name)
        assert result.ok, [e.render() for e in result.errors]
        for hook in result.policies[0].hooks:
            compile_hook(hook, 1, HostNamespaces.unknown(), fields=_RAW_SYSCALLS_FIELDS)


class _Field:
    def __init__(self, name, offset, size):
        self.name, self.offset, self.size = name, offset, size
        self.data_loc = self.inline_array = self.pointer = False
        self.type = "long"


# raw_syscalls/sys_enter's format: common fields, id (index 4), args (5)
_RAW_SYSCALLS_FIELDS = [_Field("common_type", 0, 2), _Field("common_flags", 2, 1),
                        _Field("common_preempt_count", 3, 1), _Field("common_pid", 4, 4),
                        _Field("id", 8, 8), _Field("args", 16, 8)]


# ---- validation ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(value="list:nosuch"),
     'p.yaml:23: spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: "list:nosuch" names no list of '
     "spec.lists (defined: dups)"),
    (dict(type_="uint64"),
     'p.yaml:23: spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: list "dups" has 32-bit entries, which '
     "only a syscall64 argument tells apart (this one is uint64: i386 dup and x86_64 socket are both 41)"),
    (dict(value="1:5000"),
     'p.yaml:23: spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: range "1:5000" holds 5000 integers, '
     "the limit is 4096 per hook"),
    (dict(value="1:x"),
     'p.yaml:23: spec.tracepoints[0].selectors[0].matchArgs[0].values[0]: "x" is not a number (decimal, 0x hex '
     "or 0 octal)"),
    (dict(type_="string"),
     "p.yaml:21: spec.tracepoints[0].selectors[0].matchArgs[0].operator: operator InMap cannot be used on "
     "argument 4 of type string (operators for string: Equal, NotEqual, Prefix, NotPrefix, Postfix, NotPostfix)"),
    (dict(enforcers=""),
     "p.yaml:24: spec.tracepoints[0].selectors[0].matchActions[0].action: NotifyEnforcer needs spec.enforcers: "
     "the enforcer is what acts on the note, at its syscalls"),
    (dict(action="{action: NotifyEnforcer}"),
     "p.yaml:25: spec.tracepoints[0].selectors[0].matchActions[0]: NotifyEnforcer needs argError, argSig or both"),
    (dict(action="{action: NotifyEnforcer, argError: 5}"),
     "p.yaml:25: spec.tracepoints[0].selectors[0].matchActions[0].argError: 5 is out of range (must be between "
     "-4095 and 0)"),
    (dict(enforcers='enforcers:\n- calls: ["list:dups"]\n- calls: ["sys_dup"]'),
     "p.yaml:10: spec.enforcers: 2 enforcers; a policy has one (as in Tetragon): put every call in its calls"),
    (dict(enforcers='enforcers:\n- calls: ["security_file_open"]'),
     'p.yaml:11: spec.enforcers[0].calls[0]: "security_file_open": enforcers on security_* functions (fmod_ret) '
     "are not supported by tetrahost yet; enforcers on syscalls are"),
    (dict(enforcers='enforcers:\n- calls: ["list:dupz", "sys_nosuch"]'),
     'p.yaml:11: spec.enforcers[0].calls[0]: "list:dupz" names no list of spec.lists (defined: dups)'),
])
def test_rejected_with_file_line_and_field(kwargs, message):
    errors = errors_of(killer(**kwargs))
    assert errors[0] == message, errors


def test_an_unknown_enforcer_syscall_is_named():
    errors = errors_of(killer(enforcers='enforcers:\n- calls: ["sys_dup", "__ia32_sys_nosuch"]'))
    assert errors == ['p.yaml:11: spec.enforcers[0].calls[1]: "__ia32_sys_nosuch" is not an i386 (32-bit) syscall']


def test_inmap_values_numbers_ranges_and_lists():
    policy = policy_of(killer(operator="NotInMap", value="5:3"))
    assert policy.hooks[0].selectors[0].match_args[0].parsed == (IntRange(3, 5),)
    policy = policy_of(killer())
    assert policy.hooks[0].selectors[0].match_args[0].parsed == (
        IntRange(32, 32), IntRange(33, 33), IntRange(41 | I386, 41 | I386))


def test_too_many_integers_in_one_hook():
    body = killer(value="0:4000").replace('      - "0:4000"', '      - "0:4000"\n      - "5000:5200"')
    assert errors_of(body) == ["p.yaml:18: spec.tracepoints[0].selectors: 4202 integers in this hook's "
                               "InMap/NotInMap values (ranges and lists expanded), the limit is 4096 per hook"]


# ---- compiling -----------------------------------------------------------------------

def test_inmap_compiles_to_a_set_of_the_hook():
    policy = policy_of(killer())
    tp, enforcer = policy.hooks
    out = compile_hook(tp, 3, HostNamespaces.unknown(), fields=_RAW_SYSCALLS_FIELDS)
    m = out.config.selectors[0].args[0]
    assert (m.op, m.negate) == (lib.TH_MATCH_IN_MAP, 0)
    assert sorted(v for s, v in out.int_set if s == m.set_id) == [32, 33, 41 | I386]
    assert out.config.arg_kind[0] == lib.TH_ARG_SYSCALL64
    sel = out.config.selectors[0]
    assert (sel.action, sel.action_arg, sel.notify_error) == (lib.TH_ACTION_NOTIFY_ENFORCER, 9, -1)
    # the note and the enforcer meet by the policy's id
    enf = compile_hook(enforcer, 4, HostNamespaces.unknown())
    assert enf.config.flags & lib.TH_CFG_ENFORCER
    assert enf.config.enforcer_id == out.config.enforcer_id == enforcer_id(policy.name) != 0
    negated = compile_hook(policy_of(killer(operator="NotInMap", value="7")).hooks[0], 3,
                           HostNamespaces.unknown(), fields=_RAW_SYSCALLS_FIELDS)
    assert negated.config.selectors[0].args[0].negate == 1 and [v for _, v in negated.int_set] == [7]


def test_uint64_id_takes_the_lists_x86_64_numbers():
    body = killer(type_="uint64").replace(', "__ia32_sys_dup"', "")
    out = compile_hook(policy_of(body).hooks[0], 3, HostNamespaces.unknown(), fields=_RAW_SYSCALLS_FIELDS)
    assert out.config.arg_kind[0] == lib.TH_ARG_INT
    assert [v for _, v in out.int_set] == [32, 33]


# ---- planning ------------------------------------------------------------------------

def test_enforcer_plans_override_where_possible_else_signal_at_sys_exit():
    enforcer = policy_of(killer()).hooks[1]
    symbols = {"__x64_sys_dup", "__x64_sys_dup2", "__ia32_sys_dup"}
    plans = attach_candidates(enforcer, ALL, True, False, symbols=symbols)
    assert [p.program for p in plans] == ["th_enforcer_kprobe", "th_enforcer_exit"]
    assert plans[0].targets == ("__x64_sys_dup", "__x64_sys_dup2", "__ia32_sys_dup")
    assert "argError returned, argSig sent" in plans[0].method
    here = plan_attach(enforcer, FALLBACK, True, False)
    assert (here.program, here.syscall_nrs, here.syscall_nrs32, here.dispatch_nrs) == (
        "th_enforcer_exit", (32, 33), (41,), (32, 33, 41))
    assert "argError is NOT returned on this kernel" in here.method
    assert plan_attach(enforcer, NO_OVERRIDE, True, False, symbols=symbols).program == "th_enforcer_exit"


def test_a_list_with_32_bit_entries_kprobes_ia32_functions_or_filters_i386_numbers():
    hook = policy_of('lists:\n- {name: d, type: syscalls, values: ["sys_dup", "i386/sys_dup2"]}\n'
                     'kprobes:\n- call: "list:d"\n').hooks[0]
    assert hook.syscalls == ("dup",) and hook.syscalls32 == ("dup2",)
    plan = plan_attach(hook, ALL, False, False, symbols={"__x64_sys_dup"})
    assert plan.targets == ("__x64_sys_dup",) and "skipped, not in this kernel: __ia32_sys_dup2" in plan.method
    plan = plan_attach(hook, FALLBACK, False, False)
    assert (plan.syscall_nrs, plan.syscall_nrs32) == ((32,), (SYSCALLS_I386["dup2"],)) == ((32,), (63,))
    assert "filtered to a set of 2 syscalls (dup, i386/dup2)" in plan.method


def test_syscall_sets_per_abi():
    out = compile_hook(policy_of(killer()).hooks[1], 4, HostNamespaces.unknown())
    cfg = hook_config_cdata(out, AttachInputs(syscall_nrs=(32, 33), syscall_nrs32=(41,)))
    assert cfg.syscall_set[0] == (1 << 32) | (1 << 33)
    assert cfg.syscall_set32[0] == 1 << 41
    fill_syscall_set(cfg, (), ())
    assert cfg.syscall_set[0] == cfg.syscall_set32[0] == 0


# ---- rendering -----------------------------------------------------------------------

def test_syscall64_renders_as_tetragons_syscall_id():
    raw = (41 | I386).to_bytes(8, "little")
    assert render_syscall64(raw) == {"syscall_id": {"id": 41, "abi": "i386"}}
    assert render_syscall64((41).to_bytes(8, "little")) == {"syscall_id": {"id": 41, "abi": "x64"}}


def test_function_name_of_a_32_bit_call():
    hook = policy_of('lists:\n- {name: d, type: syscalls, values: ["sys_dup", "__ia32_sys_dup"]}\n'
                     'kprobes:\n- call: "list:d"\n').hooks[0]
    assert function_name(hook, 41, compat=True) == "__ia32_sys_dup"
    assert function_name(hook, 32) == "__x64_sys_dup"


def test_the_file_open_fallback_sees_32_bit_opens_too():
    hook = policy_of("kprobes:\n- call: security_file_open\n  syscall: false\n  args:\n  - {index: 0, type: file}\n"
                     ).hooks[0]
    plan = plan_attach(hook, FALLBACK, False, False)
    assert plan.program == "th_open_exit"
    assert plan.syscall_nrs32 == tuple(SYSCALLS_I386[n] for n in ("open", "openat", "openat2", "creat"))
