"""The compiled config (plain data, tetrahost.policy.hookconfig) and the C
struct it is packed into (struct th_hook_config, csrc/events.h) have the same
fields; the attach plan's part is added when packing, never written into the
compiled hook."""
from __future__ import annotations

import copy
import dataclasses

from tetrahost.bpf.native import ffi, lib
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.policy import load_text
from tetrahost.policy.compile import compile_hook
from tetrahost.policy.hookconfig import ATTACH_FIELDS, HookConfig
from tetrahost.sensors.attach import AttachPlan
from tetrahost.sensors.hook_config import AttachInputs, hook_config_cdata, pack_hook_config

POLICY = """apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata: {name: pack}
spec:
  kprobes:
  - call: sys_setns
    syscall: true
    args: [{index: 1, type: int}]
    selectors:
    - matchArgs: [{index: 1, operator: Equal, values: [7]}]
      matchBinaries: [{operator: In, values: [/usr/bin/unshare], followChildren: true}]
      matchActions: [{action: Sigkill}]
"""


def _struct_fields(ctype) -> dict:
    return {name: f.type for name, f in ctype.fields}


def _check_same_shape(data_cls, ctype, skip=()):
    cfields = _struct_fields(ctype)
    for f in dataclasses.fields(data_cls):
        assert f.name in cfields, f"{data_cls.__name__}.{f.name} is not a field of {ctype.cname}"
        value = getattr(data_cls(), f.name)
        ftype = cfields[f.name]
        if isinstance(value, (list, bytes)):
            assert ftype.kind == "array" and ftype.length == len(value), (data_cls.__name__, f.name)
            if value and dataclasses.is_dataclass(value[0]):
                _check_same_shape(type(value[0]), ftype.item)
    missing = set(cfields) - {f.name for f in dataclasses.fields(data_cls)} - set(skip)
    assert all(name.startswith("pad") for name in missing), (ctype.cname, sorted(missing))


def test_the_plain_config_mirrors_the_c_struct():
    _check_same_shape(HookConfig, ffi.typeof("struct th_hook_config"), skip=ATTACH_FIELDS)


def _compiled():
    result = load_text(POLICY, file="pack.yaml")
    assert result.ok, [e.render() for e in result.errors]
    return compile_hook(result.policies[0].hooks[0], 9, HostNamespaces.unknown())


def test_packing_adds_the_attach_plan_and_leaves_the_compiled_hook_alone():
    compiled = _compiled()
    before = copy.deepcopy(compiled.config)
    plan = AttachPlan("th_sys_enter", "setns", "raw_tp sys_enter", syscall_nrs=(308,))
    cfg = hook_config_cdata(compiled, AttachInputs.of_plan(plan, dispatch_slot=17, follow_bits={0: 5}))
    assert compiled.config == before
    assert cfg.hook_id == 9 and cfg.nselectors == 1
    assert cfg.selectors[0].action == lib.TH_ACTION_SIGKILL
    assert cfg.selectors[0].args[0].values[0] == 7
    assert cfg.syscall_set[308 // 64] == 1 << (308 % 64)
    assert cfg.dispatch_slot == 17 and cfg.selectors[0].bin_follow == 6
    assert not cfg.flags & lib.TH_CFG_SYSCALL_WRAPPER       # sys_enter: the syscall's own arguments
    kprobe = AttachPlan("th_kprobe", "__x64_sys_setns", "kprobe", unwrap_syscall=True)
    raw = pack_hook_config(compiled, AttachInputs.of_plan(kprobe))
    cfg2 = ffi.from_buffer("struct th_hook_config *", bytearray(raw))
    assert cfg2.flags & lib.TH_CFG_SYSCALL_WRAPPER and cfg2.flags & lib.TH_CFG_NEEDS_BINARY
    assert cfg2.syscall_set[308 // 64] == 0 and cfg2.selectors[0].bin_follow == 0
    assert len(raw) == ffi.sizeof("struct th_hook_config")
    assert compiled.config == before
