"""Return probes in user space: what `return: true` compiles to, how it is
planned on kernels with and without kprobes, how the event renders."""
import dataclasses
import textwrap

import pytest

from tetrahost.bpf.native import lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.export.arg_json import render_return
from tetrahost.policy import load_text
from tetrahost.policy.compile import CompileError, compile_hook
from tetrahost.sensors.attach import AttachError, plan_attach
from tetrahost.sensors.probe import KernelFeatures

HEADER = "apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: t\nspec:\n"
ALL = KernelFeatures(**{f.name: True for f in dataclasses.fields(KernelFeatures)})
NONE = KernelFeatures(**{f.name: False for f in dataclasses.fields(KernelFeatures)})


def hook_of(spec: str):
    result = load_text(HEADER + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n", file="p.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return result.policies[0].hooks[0]


def kprobe(call="security_file_permission", syscall="false", ret_type="int", selectors="", ret=True):
    return f"""
kprobes:
- call: {call}
  syscall: {syscall}
  return: {str(ret).lower()}
  args:
  - {{index: 0, type: file}}
  returnArg: {{index: 0, type: {ret_type}}}
{selectors}"""


MATCH_RETURN = """  selectors:
  - matchReturnArgs:
    - index: 0
      operator: {op}
      values: [{values}]
"""


@pytest.mark.parametrize("ret_type, size, signed", [("int", 4, 1), ("uint32", 4, 0), ("long", 8, 1),
                                                    ("uint8", 1, 0), ("int16", 2, 1)])
def test_return_type_sets_width_and_sign(ret_type, size, signed):
    cfg = compile_hook(hook_of(kprobe(ret_type=ret_type)), 1, HostNamespaces.unknown()).config
    assert cfg.flags & lib.TH_CFG_RETURN
    assert (cfg.ret_size, cfg.ret_signed) == (size, signed)


def test_no_return_probe_without_return_true():
    cfg = compile_hook(hook_of(kprobe(ret=False)), 1, HostNamespaces.unknown()).config
    assert not cfg.flags & lib.TH_CFG_RETURN


@pytest.mark.parametrize("op, values, want_op, negate", [
    ("GT", '"0"', lib.TH_MATCH_GT, 0), ("NotEqual", '"0", "-13"', lib.TH_MATCH_EQUAL, 1),
    ("Equal", '"-1"', lib.TH_MATCH_EQUAL, 0)])
def test_match_return_args_compile_per_selector(op, values, want_op, negate):
    cfg = compile_hook(hook_of(kprobe(selectors=MATCH_RETURN.format(op=op, values=values))), 1,
                       HostNamespaces.unknown()).config
    m = cfg.ret_match[0]
    assert (m.op, m.negate) == (want_op, negate)
    assert [m.values[j] for j in range(m.nvalues)] == [int(v.strip(' "')) for v in values.split(",")]
    assert cfg.ret_match[1].op == 0          # selectors without matchReturnArgs post every return


def test_non_integer_return_type_is_a_compile_error():
    with pytest.raises(CompileError, match="returnArg.type file: the kernel side reads integer, sock and socket"):
        compile_hook(hook_of(kprobe(ret_type="file")), 1, HostNamespaces.unknown())


def test_plans_kretprobe_fexit_or_sys_exit():
    fn = hook_of(kprobe())
    assert plan_attach(fn, ALL, False, False).programs == (
        ("th_kprobe", "security_file_permission"), ("th_kretprobe", "security_file_permission"))
    no_kprobes = dataclasses.replace(ALL, kprobe=False, kretprobe=False)
    assert plan_attach(fn, no_kprobes, False, False).programs == (
        ("th_fentry", "security_file_permission"), ("th_fexit", "security_file_permission"))
    sc = hook_of(kprobe(call="sys_openat", syscall="true"))
    plan = plan_attach(sc, dataclasses.replace(NONE, raw_tracepoint=True), False, False)
    assert plan.programs == (("th_sys_enter", "openat"), ("th_sys_exit", "sys_exit"))
    assert plan.syscall_nrs == (257,)


def test_override_through_lsm_returns_from_the_function_itself():
    h = hook_of(kprobe(call="security_file_open", selectors="""  selectors:
  - matchActions:
    - action: Override
      argError: -1
"""))
    plan = plan_attach(h, ALL, True, True, symbols={"bpf_lsm_file_open"})
    assert plan.programs == (("th_lsm", "file_open"), ("th_kretprobe", "security_file_open"))


def test_no_return_half_is_an_attach_error():
    with pytest.raises(AttachError, match="return: true needs kretprobes or fexit"):
        plan_attach(hook_of(kprobe()), dataclasses.replace(ALL, kretprobe=False, fexit=False), False, False)


def test_return_renders_as_its_type():
    assert render_return(hook_of(kprobe()), -13) == {"int_arg": -13}
    assert render_return(hook_of(kprobe(ret_type="size_t")), 4096) == {"size_arg": "4096"}
    assert render_return(hook_of(kprobe(ret_type="uint32")), 7) == {"uint_arg": 7}
