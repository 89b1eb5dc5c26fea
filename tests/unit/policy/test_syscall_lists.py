"""spec.lists: validation errors (file:line: field), the hook a syscall list
becomes, how it is planned with and without kprobes, the syscall set the
sys_enter fallback filters on, and the function name its events carry."""
import dataclasses

import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export.hook_json import function_name
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook
from tetrahost.sensors.attach import AttachError, attach_candidates, plan_attach
from tetrahost.sensors.hook_config import fill_syscall_set
from tetrahost.sensors.probe import KernelFeatures
from tetrahost.arch import SYSCALLS_X86_64

from policytest_helpers import errors_of, policy_text

ALL = KernelFeatures(**{f.name: True for f in dataclasses.fields(KernelFeatures)})
FALLBACK = KernelFeatures(**{f.name: False for f in dataclasses.fields(KernelFeatures)} | {"raw_tracepoint": True})

DUPS = """
lists:
- name: dups
  type: syscalls
  values: [{values}]
kprobes:
- call: "list:dups"
{extra}"""
# under spec: "- name" is line 7, "type" 8, "values" 9, "- call" 11, line 12 = first of extra


def dups(values='"sys_dup", "sys_dup2"', extra=""):
    return DUPS.format(values=values, extra=extra)


def hook_of(spec_body: str):
    result = load_text(policy_text(spec_body), file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return result.policies[0].hooks[0]


# ---- validation -------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ('"sys_dup", "sys_nosuch"', 'p.yaml:9: spec.lists[0].values[1]: "sys_nosuch" is not an x86_64 syscall'),
    ('"sys_dup", "dup"', 'p.yaml:9: spec.lists[0].values[1]: "dup": syscall dup (x64) is already listed at '
                         "spec.lists[0].values[0]"),
    ('"__ia32_sys_dup", "i386/sys_dup"', 'p.yaml:9: spec.lists[0].values[1]: "i386/sys_dup": syscall dup (i386) '
                                         "is already listed at spec.lists[0].values[0]"),
    ('"__x32_sys_dup"', 'p.yaml:9: spec.lists[0].values[0]: "__x32_sys_dup": x32 ABI syscalls are not '
                        "supported by tetrahost (x64 and i386 are)"),
    ('"i386/sys_nosuch"', 'p.yaml:9: spec.lists[0].values[0]: "i386/sys_nosuch" is not an i386 (32-bit) syscall'),
    ('"arm64/sys_dup"', 'p.yaml:9: spec.lists[0].values[0]: "arm64/sys_dup": unknown ABI "arm64" '
                        "(x64 or i386 on x86_64)"),
    ('"i386/dup"', 'p.yaml:9: spec.lists[0].values[0]: "i386/dup": a 32-bit entry is written __ia32_sys_NAME '
                   "or i386/sys_NAME"),
    ('', "p.yaml:9: spec.lists[0].values: a syscalls list needs at least one value"),
])
def test_bad_syscall_values(values, message):
    assert errors_of(dups(values)) == [message]


def test_call_must_name_a_defined_list():
    assert errors_of(dups().replace('"list:dups"', '"list:dupz"')) == [
        'p.yaml:11: spec.kprobes[0].call: "list:dupz" names no list of spec.lists (defined: dups)']


def test_list_names_are_unique():
    body = """
lists:
- name: a
  type: generated_syscalls
- name: a
  type: generated_syscalls
kprobes:
- call: "list:a"
"""
    assert errors_of(body) == ['p.yaml:9: spec.lists[1].name: list "a" is already defined at spec.lists[0]']


@pytest.mark.parametrize("list_body, message", [
    ("type: generated_ftrace\n  pattern: \"^ksys_*\"",
     'p.yaml:8: spec.lists[0].type: list type "generated_ftrace" (kernel functions by ftrace name or pattern) '
     "is not supported by tetrahost yet; syscall lists are (syscalls, generated_syscalls)"),
    ("type: syscallz\n  values: [sys_dup]",
     'p.yaml:8: spec.lists[0].type: unknown list type "syscallz" '
     "(expected one of: syscalls, generated_syscalls, generated_ftrace, ftrace)"),
    ("type: generated_syscalls\n  values: [sys_dup]",
     "p.yaml:9: spec.lists[0].values: a generated_syscalls list holds every syscall: it takes no values"),
    ("type: syscalls\n  values: [sys_dup]\n  pattern: x",
     "p.yaml:10: spec.lists[0].pattern: pattern belongs to generated_ftrace lists"),
    ("values: [sys_dup]", "p.yaml:7: spec.lists[0].type: required field is missing"),
])
def test_list_type_rules(list_body, message):
    body = f"""
lists:
- name: l
  {list_body}
kprobes:
- call: "list:l"
"""
    errors = errors_of(body)
    assert errors == [message]


def test_return_probe_on_a_list_is_rejected_with_the_reason():
    assert errors_of(dups(extra="  return: true\n")) == [
        "p.yaml:12: spec.kprobes[0].return: return probes on a list hook are not supported by tetrahost yet "
        "(one return program per list would have to tell the syscalls' returns apart)"]


def test_syscall_false_contradicts_a_syscall_list():
    assert errors_of(dups(extra="  syscall: false\n")) == [
        'p.yaml:12: spec.kprobes[0].syscall: list "dups" holds syscalls: syscall: false contradicts it']


# ---- the hook and its compiled config ----------------------------------------------

def test_a_list_hook_is_one_syscall_hook_over_every_listed_syscall():
    hook = hook_of(dups(extra="  args:\n  - {index: 1, type: string}\n"))
    assert (hook.syscall, hook.syscall_list, hook.syscalls) == (True, "dups", ("dup", "dup2"))
    assert not hook.is_exec_hook
    cfg = compile_hook(hook, 7, HostNamespaces.unknown()).config
    assert cfg.arg_kind[0] == lib.TH_ARG_STR_USER       # a syscall's pointer: user memory
    assert "syscall list: 2 syscalls (dup, dup2)" in hook.describe()


def test_generated_syscalls_is_every_x86_64_syscall():
    hook = hook_of('lists:\n- {name: all, type: generated_syscalls}\nkprobes:\n- call: "list:all"\n')
    assert hook.syscalls == tuple(SYSCALLS_X86_64)


# ---- planning ------------------------------------------------------------------------

def test_fallback_plan_filters_on_the_set_of_numbers():
    plan = plan_attach(hook_of(dups()), FALLBACK, False, False)
    assert plan.programs == (("th_sys_enter", "list:dups"),)
    assert plan.syscall_nrs == (SYSCALLS_X86_64["dup"], SYSCALLS_X86_64["dup2"]) == (32, 33)
    assert "raw_tp sys_enter filtered to a set of 2 syscalls (dup, dup2)" in plan.method


def test_kprobe_plan_attaches_to_each_function_the_kernel_has():
    symbols = {"__x64_sys_dup", "__x64_sys_dup2", "bpf_lsm_file_open"}
    plan = plan_attach(hook_of(dups('"sys_dup", "sys_dup2", "sys_dup3"')), ALL, False, False, symbols=symbols)
    assert plan.programs == (("th_kprobe", "list:dups"),)
    assert plan.targets == ("__x64_sys_dup", "__x64_sys_dup2")
    assert plan.unwrap_syscall
    assert plan.method == ("kprobe on 2 functions of 3 syscalls (__x64_sys_dup, __x64_sys_dup2); "
                           "skipped, not in this kernel: __x64_sys_dup3")


def test_kprobe_plan_with_no_listed_function_falls_back_to_sys_enter():
    plans = attach_candidates(hook_of(dups()), ALL, False, False, symbols={"__x64_sys_read"})
    assert [p.program for p in plans] == ["th_sys_enter"]
    # and where sys_enter cannot serve either, the kprobe reason is what is said
    no_raw_tp = dataclasses.replace(ALL, raw_tracepoint=False)
    with pytest.raises(AttachError, match="this kernel has none of the list's syscall functions"):
        plan_attach(hook_of(dups()), no_raw_tp, False, False, symbols={"__x64_sys_read"})


def test_list_candidates_are_kprobes_then_sys_enter():
    plans = attach_candidates(hook_of(dups()), ALL, False, False, symbols={"__x64_sys_dup"})
    assert [p.program for p in plans] == ["th_kprobe", "th_sys_enter"]
    assert plans[1].syscall_nrs == (32, 33)


def test_override_on_a_list_needs_kprobe_override():
    hook = hook_of(dups())
    plan = plan_attach(hook, ALL, True, True, symbols={"__x64_sys_dup", "__x64_sys_dup2"})
    assert plan.program == "th_kprobe_override"
    with pytest.raises(AttachError, match="Override of syscalls needs kprobes with bpf_override_return"):
        plan_attach(hook, FALLBACK, True, True)


def test_syscall_set_bits():
    cfg = ffi.new("struct th_hook_config *")
    cfg.syscall_set[0] = 1          # stale bits from an earlier fill are cleared
    fill_syscall_set(cfg, (32, 33, 257, 450))
    words = [cfg.syscall_set[i] for i in range(lib.TH_SYSCALL_SET_BITS // 64)]
    assert words == [1 << 32 | 1 << 33, 0, 0, 0, 1 << (257 - 256), 0, 0, 1 << (450 - 448)]
    with pytest.raises(ValueError, match="outside the fallback's set"):
        fill_syscall_set(cfg, (512,))


# ---- events --------------------------------------------------------------------------

def test_function_name_is_the_syscall_that_fired():
    hook = hook_of(dups())
    assert function_name(hook, 33) == "__x64_sys_dup2"
    assert function_name(hook, -1) == "list:dups"       # no number: what the policy wrote
    single = hook_of("kprobes:\n- call: sys_dup\n")
    assert function_name(single, 32) == "sys_dup"       # single-syscall hooks keep their name
