"""A compiled hook's config as the kernel reads it: `struct th_hook_config`.

The policy front end compiles a hook to plain data (tetrahost.policy.hookconfig,
field for field the C struct less the attach-time fields).  Here that data
and what only the attach plan knows come together, once, into the bytes
written to the hook's `hook_config` map:
- the syscall sets of the sys_enter/sys_exit fallback (AttachPlan.syscall_nrs),
- TH_CFG_SYSCALL_WRAPPER (the arguments sit in the syscall's pt_regs: kprobe
  or fentry on __x64_sys_*) and TH_CFG_IMA_HASH (the IMA program is attached),
- the syscall dispatcher's slot,
- USDT argument locations, read from the binary's note when it attaches,
- the followChildren bits the process sensor gave (selector -> bit).
The compiled config is never changed: a replaced binary or a new slot packs
again from the same inputs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tetrahost.bpf.native import ffi, lib
from tetrahost.policy.compiled import CompiledHook

IMA_PROGRAMS = ("th_ima_bprm", "th_ima_file")


@dataclass(frozen=True)
class AttachInputs:
    """What the attach adds to a compiled config (all optional)."""
    syscall_nrs: tuple[int, ...] = ()
    syscall_nrs32: tuple[int, ...] = ()
    unwrap_syscall: bool = False
    ima_hash: bool = False
    dispatch_slot: int = 0
    usdt_args: tuple = ()                   # tetrahost.usdt.argspec.UsdtArg, argument order
    follow_bits: dict[int, int] = field(default_factory=dict)   # selector index -> followChildren bit

    @classmethod
    def of_plan(cls, plan, **more) -> "AttachInputs":
        """The inputs an AttachPlan decides (tetrahost.sensors.attach)."""
        return cls(syscall_nrs=plan.syscall_nrs, syscall_nrs32=plan.syscall_nrs32,
                   unwrap_syscall=plan.unwrap_syscall, ima_hash=plan.ret_program in IMA_PROGRAMS, **more)


def fill_syscall_set(cfg, numbers, numbers32=()) -> None:
    """th_hook_config.syscall_set: bit n = syscall n passes the sys_enter/exit
    fallback; syscall_set32 the same for i386 numbers (32-bit tasks)."""
    for bits, nrs in ((cfg.syscall_set, numbers), (cfg.syscall_set32, numbers32)):
        for word in range(lib.TH_SYSCALL_SET_BITS // 64):
            bits[word] = 0
        for nr in nrs:
            if not 0 <= nr < lib.TH_SYSCALL_SET_BITS:
                raise ValueError(f"syscall {nr} is outside the fallback's set (0..{lib.TH_SYSCALL_SET_BITS - 1})")
            bits[nr // 64] |= 1 << (nr % 64)


def fill(c, data) -> None:
    """Copy a hookconfig dataclass into the cdata struct `c` of the same
    shape, field by field (names are the C struct's)."""
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if isinstance(value, list):
            target = getattr(c, f.name)
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    fill(target[i], item)
                else:
                    target[i] = item
        elif isinstance(value, bytes):
            ffi.memmove(getattr(c, f.name), value, len(value))
        elif dataclasses.is_dataclass(value):
            fill(getattr(c, f.name), value)
        else:
            setattr(c, f.name, value)


def hook_config_cdata(compiled: CompiledHook, inputs: AttachInputs = AttachInputs()):
    """A new `struct th_hook_config *` of the compiled hook plus the attach inputs."""
    cfg = ffi.new("struct th_hook_config *")
    fill(cfg, compiled.config)
    fill_syscall_set(cfg, inputs.syscall_nrs, inputs.syscall_nrs32)
    if inputs.ima_hash:        # attached before th_lsm: it finds it there
        cfg.flags |= lib.TH_CFG_IMA_HASH
    else:
        cfg.flags &= ~lib.TH_CFG_IMA_HASH
    if inputs.unwrap_syscall:
        cfg.flags |= lib.TH_CFG_SYSCALL_WRAPPER
    else:      # sys_enter hands over the syscall's own arguments
        cfg.flags &= ~lib.TH_CFG_SYSCALL_WRAPPER
    cfg.dispatch_slot = inputs.dispatch_slot
    for i, spec in enumerate(inputs.usdt_args[:lib.TH_MAX_ARGS]):
        spec.fill(cfg.usdt_args[i])
    for sel_index, bit in inputs.follow_bits.items():
        cfg.selectors[sel_index].bin_follow = bit + 1
    return cfg


def pack_hook_config(compiled: CompiledHook, inputs: AttachInputs = AttachInputs()) -> bytes:
    """The bytes of the hook's `hook_config` map entry (key 0)."""
    return ffi.buffer(hook_config_cdata(compiled, inputs))[:]
