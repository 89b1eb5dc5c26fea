"""How each policy hook attaches on this kernel: the choice, and why.

Inputs: the hook, what it compiled to (does it enforce? override?), and the
kernel's probed features (tetrahost.sensors.probe).  Output: which entry
program of csrc/bpf/generic.bpf.c to load, its target, and a sentence an
operator can read in `tetra tracingpolicy list` / `policy check`.  Every way
the probed features allow comes out, best first (attach_candidates): the
agent falls back to the next when one does not load or attach.  A way that
would not enforce what the policy asks is never among them; a hook that
cannot be honoured at all raises AttachError with the reason.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from tetrahost.arch import IA32_PREFIX, SYSCALLS_I386, SYSCALLS_X86_64, X64_PREFIX, ia32_function, x64_function
from tetrahost.policy.model import Hook

# Tetragon's kprobe targets -> the LSM hook with the same arguments, where
# the names differ by more than the "security_" prefix.
LSM_HOOK_FOR_FUNCTION = {
    "security_bprm_check": "bprm_check_security",
    "security_bprm_creds_for_exec": "bprm_creds_for_exec",
    "security_bprm_creds_from_file": "bprm_creds_from_file",
    "security_bprm_committing_creds": "bprm_committing_creds",
    "security_bprm_committed_creds": "bprm_committed_creds",
}
# exec hooks the raw_tp/sched_process_exec fallback can stand in for: it sees
# the same linux_binprm, after the point of no return but before the new
# image runs an instruction
EXEC_FALLBACK_FUNCTIONS = {"security_bprm_check", "security_bprm_creds_for_exec", "bprm_check_security",
                           "bprm_creds_for_exec", "security_bprm_committing_creds"}


# File-open hooks with a fallback where nothing can hook the function: the
# completed open, at the exit of these syscalls (x86_64 entries).
FILE_OPEN_FALLBACK_HOOKS = {"security_file_open"}
OPEN_SYSCALLS = ("open", "openat", "openat2", "creat")


class AttachError(Exception):
    pass


@dataclass(frozen=True)
class AttachPlan:
    program: str            # entry program in generic.bpf.o
    target: str             # kernel function / LSM hook / syscall name
    method: str             # for operators: how, and why this way
    syscall_nrs: tuple[int, ...] = ()   # sys_enter fallback: the syscalls it lets through
    syscall_nrs32: tuple[int, ...] = ()  # ... and the i386 ones, for tasks in a 32-bit syscall
    unwrap_syscall: bool = False   # arguments sit in the syscall's pt_regs
    ret_program: str = ""   # return probes: the program that sees the return value
    ret_target: str = ""
    # list hooks on kprobes: the one loaded program attaches to each of these
    # (`target` is then the list, "list:NAME")
    targets: tuple[str, ...] = ()

    @property
    def programs(self) -> tuple[tuple[str, str], ...]:
        """(program, target) of each program this plan loads: entry first."""
        if self.ret_program:
            return ((self.program, self.target), (self.ret_program, self.ret_target))
        return ((self.program, self.target),)

    @property
    def dispatch_nrs(self) -> tuple[int, ...]:
        """Every number the dispatcher runs this hook on (the hook itself tells
        an x86_64 number from the same i386 one by the task's ABI)."""
        return tuple(sorted({*self.syscall_nrs, *self.syscall_nrs32}))

    @property
    def is_fallback(self) -> bool:
        return self.program in ("th_sys_enter", "th_exec", "th_open_exit")


@functools.lru_cache(maxsize=1)
def kernel_symbols(path: str = "/proc/kallsyms") -> frozenset[str]:
    """The kernel's BPF-LSM hook symbols (bpf_lsm_*) and syscall functions
    (__x64_sys_*): all lsm_hook_for and list plans ask about; the whole symbol
    table would be kept for the agent's lifetime."""
    try:
        with open(path) as f:
            return frozenset(p[2] for line in f
                             if len(p := line.split()) >= 3
                             and p[2].startswith(("bpf_lsm_", X64_PREFIX, IA32_PREFIX)))
    except OSError:
        return frozenset()


def lsm_hook_for(function: str, symbols=None) -> str | None:
    """The BPF-LSM hook standing for a security_* function, if the kernel has it."""
    symbols = kernel_symbols() if symbols is None else symbols
    name = LSM_HOOK_FOR_FUNCTION.get(function)
    if name is None and function.startswith("security_"):
        name = function[len("security_"):]
    if name and f"bpf_lsm_{name}" in symbols:
        return name
    return None


def plan_compiled(hook: Hook, compiled, features, symbols=None) -> AttachPlan:
    """The preferred plan for a compiled hook (candidates_compiled()[0])."""
    return candidates_compiled(hook, compiled, features, symbols)[0]


def candidates_compiled(hook: Hook, compiled, features, symbols=None) -> list[AttachPlan]:
    """Every plan the probed features allow for a compiled hook, best first:
    in policy-mode monitor nothing is enforced, so no hook that can enforce
    (or override) is needed."""
    enforcing = not compiled.config.monitor
    return attach_candidates(hook, features, enforcing and compiled.uses_enforcement,
                             enforcing and compiled.uses_override, symbols)


def plan_attach(hook: Hook, features, enforces: bool, overrides: bool, symbols=None) -> AttachPlan:
    return attach_candidates(hook, features, enforces, overrides, symbols)[0]


def attach_candidates(hook: Hook, features, enforces: bool, overrides: bool, symbols=None) -> list[AttachPlan]:
    """The plans that can honour the hook on this kernel, best first.  The
    probe proves a kind of program works, not that this object verifies or
    that this function takes it: the agent tries them in order and uses the
    first that loads and attaches.  AttachError (with the reason for the
    best one) when the probe rules out every way."""
    plans: list[AttachPlan] = []
    errors: list[str] = []
    for plan in _entry_candidates(hook, features, enforces, overrides, symbols):
        if isinstance(plan, AttachError):
            errors.append(str(plan))
            continue
        try:
            plans.append(_with_return(hook, plan, features) if hook.return_ else plan)
        except AttachError as exc:
            errors.append(str(exc))
    # imaHash: the plan with the sleepable IMA program first; the same plan
    # without it next, in case this hook does not take a sleepable program
    with_ima: list[AttachPlan] = []
    for plan in plans:
        hashed = _with_ima(hook, plan, features)
        if hashed is not plan:
            with_ima.append(hashed)
            plan = replace(plan, method=f"{plan.method}; imaHash not available here: the sleepable IMA program "
                           f"did not load or attach on {plan.target}; events carry no ima_hash")
        with_ima.append(plan)
    plans = with_ima
    note = ima_hash_note(hook, features)
    if not plans:
        error = errors[0] if errors else f"{hook.name}: no attach method on this kernel"
        raise AttachError(f"{error}; {note}" if note else error)
    return [replace(p, method=f"{p.method}; {note}") for p in plans] if note else plans


# imaHash: the sleepable program that hashes the hook's first argument, by its type
IMA_PROGRAMS = {"linux_binprm": "th_ima_bprm", "file": "th_ima_file"}


def _asks_ima(hook: Hook) -> bool:
    return any(a.ima_hash for s in hook.selectors for a in s.match_actions)


def ima_program(hook: Hook) -> str:
    first = next((a for a in hook.args if a.index == 0), None)
    return IMA_PROGRAMS.get(first.base_type, "") if first is not None else ""


def _with_ima(hook: Hook, plan: AttachPlan, features) -> AttachPlan:
    """A BPF-LSM plan of a hook asking imaHash, where the kernel gives the
    hash: with its sleepable IMA program as the second program (attached
    first, so that it runs after th_lsm; see csrc/bpf/lib/hook_ima.bpf.h)."""
    if (plan.program != "th_lsm" or plan.ret_program or not _asks_ima(hook)
            or not getattr(features, "ima_hash", False) or not ima_program(hook)):
        return plan
    return replace(plan, ret_program=ima_program(hook), ret_target=plan.target,
                   method=f"{plan.method}; imaHash from sleepable BPF-LSM {plan.target} (bpf_ima_file_hash)")


def ima_hash_note(hook: Hook, features) -> str:
    """Why a hook whose Post asks imaHash gets no hash here ("" when none
    asks, or when it gets one).  The hash needs a sleepable BPF-LSM program
    calling bpf_ima_file_hash (`tetrahost probe`: ima_hash) on the hook's
    first argument, a linux_binprm or a file."""
    if not _asks_ima(hook):
        return ""
    if getattr(features, "lsm", False) and getattr(features, "ima_hash", False) and ima_program(hook):
        return ""
    if not getattr(features, "lsm", False):
        why = "it needs BPF-LSM, which is not usable on this kernel (`tetrahost probe`: lsm)"
    elif not getattr(features, "ima_hash", False):
        why = ("this kernel gives BPF programs no IMA hash (`tetrahost probe`: ima_hash: no sleepable "
               "BPF-LSM program with bpf_ima_file_hash, or IMA not active)")
    else:
        why = ("tetrahost hashes the hook's first argument (index 0) when it is a linux_binprm or a file, "
               "and this hook's is not")
    return f"imaHash not available here: {why}; events carry no ima_hash"


def _with_return(hook: Hook, plan: AttachPlan, features) -> AttachPlan:
    """Add the return half of a `return: true` hook: where the entry is a
    kprobe, fentry or BPF-LSM program, a kretprobe (or fexit) on the function
    itself; where it is the sys_enter fallback, sys_exit filtered the same way."""
    if plan.program == "th_sys_enter":
        return replace(plan, ret_program="th_sys_exit", ret_target="sys_exit",
                       method=plan.method + "; return value from raw_tp sys_exit")
    if plan.program in ("th_tracepoint", "th_raw_tp", "th_exec"):
        raise AttachError(f"{hook.name}: return: true needs kretprobes or fexit, which {plan.method} "
                          "cannot stand in for")
    # the function whose return we see: the syscall's wrapper, or the kernel
    # function itself (also when the entry is its BPF-LSM hook)
    target = plan.target if plan.program != "th_lsm" else hook.name
    if features.kretprobe:
        return replace(plan, ret_program="th_kretprobe", ret_target=target,
                       method=plan.method + f"; return value from kretprobe {target}")
    if features.fexit:
        return replace(plan, ret_program="th_fexit", ret_target=target,
                       method=plan.method + f"; return value from fexit {target}")
    raise AttachError(f"{hook.name}: return: true needs kretprobes or fexit, and this kernel has neither")


def _entry_candidates(hook: Hook, features, enforces: bool, overrides: bool, symbols):
    """Entry plans, best first; an AttachError in the list says why the way
    that would have come first is ruled out (reported only if none is left)."""
    if hook.kind == "lsm":
        if not features.lsm:
            return [AttachError(f"lsm hook {hook.name}: BPF-LSM is not usable on this kernel "
                                "(see `tetrahost probe`)")]
        return [AttachPlan("th_lsm", hook.name, f"BPF-LSM {hook.name}")]
    if hook.kind == "uprobe":
        return [_uprobe_candidate(hook, features, overrides)]
    if hook.kind == "usdt":
        return [_usdt_candidate(hook, features, overrides)]
    if hook.kind == "tracepoint":
        if overrides:
            return [AttachError(f"{hook.name}: Override is not possible at a tracepoint")]
        if hook.raw:
            return [AttachPlan("th_raw_tp", hook.event, f"raw_tp {hook.event}")]
        return [AttachPlan("th_tracepoint", hook.name, f"tracepoint {hook.name}")]
    if hook.kind == "enforcer":
        return _enforcer_candidates(hook, features, symbols)
    if hook.syscall_list:
        return _list_candidates(hook, features, overrides, symbols)
    if hook.syscall:
        return _syscall_candidates(hook, features, overrides)
    if hook.is_exec_hook:
        return _exec_candidates(hook, features, enforces, overrides, symbols)
    return _function_candidates(hook, features, overrides, symbols)


def uprobe_target(hook: Hook) -> str:
    """"/usr/bin/bash:readline", or the file offset: "/usr/bin/app:0x1139"."""
    return f"{hook.path}:{hook.symbol or hex(hook.offset)}"


def _uprobe_candidate(hook: Hook, features, overrides: bool) -> AttachPlan | AttachError:
    target = uprobe_target(hook)
    if overrides:       # the validator rejects it; a hand-built hook must not load as Post
        return AttachError(f"uprobe {target}: Override is not possible on a uprobe")
    if not getattr(features, "uprobe", False):
        return AttachError(f"uprobe {target}: uprobes are not usable on this kernel (see `tetrahost probe`)")
    how = "symbol resolved in its ELF symbols" if hook.symbol else "file offset"
    return AttachPlan("th_uprobe", target, f"uprobe {target} ({how}; every process)")


def _usdt_candidate(hook: Hook, features, overrides: bool) -> AttachPlan | AttachError:
    """A uprobe at the point's address (from the binary's note, read when the
    hook attaches); th_usdt_set where a selector Sets an argument."""
    target = f"{hook.path}:{hook.name}"
    if overrides:
        return AttachError(f"usdt {target}: Override is not possible on a USDT point")
    if not getattr(features, "uprobe", False):
        return AttachError(f"usdt {target}: uprobes are not usable on this kernel (see `tetrahost probe`)")
    sets = any(a.action == "Set" for sel in hook.selectors for a in sel.match_actions)
    if not sets:
        return AttachPlan("th_usdt", target, f"usdt {target} (uprobe at the point of its .note.stapsdt; "
                          "every process)")
    if not getattr(features, "probe_write_user", False):
        return AttachError(f"usdt {target}: the Set action needs bpf_probe_write_user, which this kernel "
                           "refuses (lockdown, see `tetrahost probe`: probe_write_user); without Set the "
                           "point attaches")
    return AttachPlan("th_usdt_set", target, f"usdt {target} (uprobe at the point of its .note.stapsdt, "
                      "Set with bpf_probe_write_user; every process)")


def _syscall_candidates(hook: Hook, features, overrides: bool) -> list:
    name = hook.syscall_name
    target = x64_function(name)
    if overrides:
        # Changing a syscall's return needs the kernel's error-injection list
        # (CONFIG_FUNCTION_ERROR_INJECTION) for fmod_ret as for
        # bpf_override_return; override_return is what the probe can prove.
        plans = []
        if features.override_return and features.fmod_ret:
            plans.append(AttachPlan("th_fmod_ret", target, f"fmod_ret {target} (Override returns the error)",
                                    unwrap_syscall=True))
        if features.override_return and features.kprobe:
            plans.append(AttachPlan("th_kprobe_override", target, f"kprobe {target} with bpf_override_return",
                                    unwrap_syscall=True))
        return plans or [AttachError(
            f"{target}: Override of a syscall needs error injection "
            "(CONFIG_FUNCTION_ERROR_INJECTION, for fmod_ret or bpf_override_return), "
            "which this kernel lacks; hook the matching security_* function or LSM hook instead")]
    plans: list = []
    if features.kprobe:
        plans.append(AttachPlan("th_kprobe", target, f"kprobe {target}", unwrap_syscall=True))
    if features.fentry:
        plans.append(AttachPlan("th_fentry", target, f"fentry {target}", unwrap_syscall=True))
    nr = SYSCALLS_X86_64.get(name)
    if nr is not None and features.raw_tracepoint:
        plans.append(AttachPlan("th_sys_enter", name, f"raw_tp sys_enter filtered to syscall {nr} ({name})"
                                + ("" if plans else "; fallback: this kernel has no kprobes/fentry"),
                                syscall_nrs=(nr,)))
    elif not plans:
        plans.append(AttachError(f"{hook.name}: no kprobes or fentry on this kernel, and {name!r} "
                                 "is not an x86_64 syscall the sys_enter fallback can filter"))
    return plans


def _few(names, shown: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")


def plan_syscall_list(hook: Hook, features, overrides: bool, symbols=None) -> AttachPlan:
    plan = _list_candidates(hook, features, overrides, symbols)[0]
    if isinstance(plan, AttachError):
        raise plan
    return plan


def _list_candidates(hook: Hook, features, overrides: bool, symbols=None) -> list:
    """A `list:NAME` hook: one loaded program for every syscall of the list.
    With kprobes it attaches to each __x64_sys_* function (those the kernel
    lacks are skipped and said); else, or when that fails, the sys_enter
    fallback filters on a set of syscall numbers.  fentry/fmod_ret programs
    are bound to one function at load, so they would need one object per
    syscall: not used for lists."""
    target = f"list:{hook.syscall_list}"
    calls = len(hook.syscalls) + len(hook.syscalls32)
    count = f"{calls} syscall{'s' if calls != 1 else ''}"
    plans: list = []
    if features.kprobe and (not overrides or features.override_return):
        plan = _kprobe_on_syscalls(hook, target, "th_kprobe_override" if overrides else "th_kprobe",
                                   " with bpf_override_return" if overrides else "", count, symbols)
        plans.append(plan)
    if overrides:
        if not plans:
            plans.append(AttachError(f"{target}: Override of syscalls needs kprobes with bpf_override_return "
                                     "(CONFIG_BPF_KPROBE_OVERRIDE), which this kernel lacks"))
        return plans
    if features.raw_tracepoint:
        plans.append(AttachPlan("th_sys_enter", target,
                                f"raw_tp sys_enter filtered to a set of {count} ({_few(_calls(hook))})"
                                + ("" if features.kprobe else "; fallback: this kernel has no kprobes"),
                                **_numbers(hook)))
    return plans


def _calls(hook: Hook) -> list[str]:
    return [*hook.syscalls, *(f"i386/{name}" for name in hook.syscalls32)]


def _numbers(hook: Hook) -> dict:
    """The sys_enter/sys_exit filter of a list or enforcer: x86_64 numbers, and
    i386 numbers matched only for tasks in a 32-bit syscall."""
    return {"syscall_nrs": tuple(SYSCALLS_X86_64[n] for n in hook.syscalls),
            "syscall_nrs32": tuple(SYSCALLS_I386[n] for n in hook.syscalls32)}


def _kprobe_on_syscalls(hook: Hook, target: str, program: str, how: str, count: str, symbols):
    """One program on the syscall functions of a list or enforcer: __x64_sys_*
    and, for 32-bit entries, __ia32_sys_* (those the kernel lacks are skipped
    and said: a kernel without IA32 emulation has no __ia32_sys_*)."""
    symbols = kernel_symbols() if symbols is None else symbols
    functions = [x64_function(name) for name in hook.syscalls] + [ia32_function(name) for name in hook.syscalls32]
    # an unreadable kallsyms says nothing: try them all, HookSensor skips failures
    known = {s for s in symbols if s.startswith((X64_PREFIX, IA32_PREFIX))}
    present = tuple(f for f in functions if f in known) if known else tuple(functions)
    missing = [f for f in functions if f not in present]
    if not present:
        owner = "enforcer" if hook.kind == "enforcer" else "list"
        return AttachError(f"{target}: this kernel has none of the {owner}'s syscall functions ({_few(functions)})")
    method = f"kprobe{how} on {len(present)} functions of {count} ({_few(present)})"
    if missing:
        method += f"; skipped, not in this kernel: {_few(missing)}"
    return AttachPlan(program, target, method, unwrap_syscall=True, targets=present)


def _enforcer_candidates(hook: Hook, features, symbols) -> list:
    """spec.enforcers: where kprobes have bpf_override_return, a kprobe on each
    syscall function returns argError and sends argSig (Tetragon's way);
    else the syscalls' exit, in the dispatcher's chains, sends argSig only:
    the call has run, and its return value cannot be changed from there."""
    target = "enforcer"
    calls = len(hook.syscalls) + len(hook.syscalls32)
    count = f"{calls} syscall{'s' if calls != 1 else ''}"
    plans: list = []
    if features.kprobe and features.override_return:
        plans.append(_kprobe_on_syscalls(hook, target, "th_enforcer_kprobe",
                                         " with bpf_override_return (argError returned, argSig sent)",
                                         count, symbols))
    if features.raw_tracepoint:
        plans.append(AttachPlan("th_enforcer_exit", target,
                                f"raw_tp sys_exit of {count} ({_few(_calls(hook))}): argSig sent when the "
                                "call returns; argError is NOT returned on this kernel (no "
                                "bpf_override_return: the syscall runs, a Sigkill stops the task before "
                                "it sees the result)", **_numbers(hook)))
    return plans or [AttachError("enforcer: needs kprobes with bpf_override_return or raw tracepoints, "
                                 "and this kernel has neither")]


def _exec_candidates(hook: Hook, features, enforces: bool, overrides: bool, symbols) -> list:
    """Exec hooks: BPF-LSM (a Sigkill also fails the exec), fmod_ret on the
    security_* function (the same, where BPF-LSM is not an active LSM), then
    kprobe or fentry (the signal alone), then the sched_process_exec fallback."""
    if overrides:
        return _function_candidates(hook, features, overrides, symbols)
    plans: list = []
    lsm = lsm_hook_for(hook.name, symbols) if hook.name.startswith("security_") else hook.name
    if features.lsm and lsm:
        why = "a Sigkill also fails the exec (EPERM), so the program never runs" if enforces else "exec hook"
        plans.append(AttachPlan("th_lsm", lsm, f"BPF-LSM {lsm} ({why})"))
    if enforces and features.fmod_ret and hook.name.startswith("security_"):
        plans.append(AttachPlan("th_fmod_ret", hook.name, f"fmod_ret {hook.name} "
                                "(a Sigkill also fails the exec (EPERM), so the program never runs)"))
    by_signal = " (Sigkill by signal: the exec itself is not failed)" if enforces else ""
    if features.kprobe:
        plans.append(AttachPlan("th_kprobe", hook.name, f"kprobe {hook.name}{by_signal}"))
    elif features.fentry:
        plans.append(AttachPlan("th_fentry", hook.name, f"fentry {hook.name}{by_signal}"))
    # not with resolve: at sched_process_exec the linux_binprm is past the
    # point of no return (its mm is the task's now, bprm->mm NULL), so paths
    # through it would not read what they read at the hook
    if (hook.name in EXEC_FALLBACK_FUNCTIONS and any(a.base_type == "linux_binprm" for a in hook.args)
            and not any(a.resolve for a in hook.args) and features.raw_tracepoint):
        plans.append(AttachPlan("th_exec", "sched_process_exec",
                                "raw_tp sched_process_exec" + ("" if plans else "; fallback: no kprobes/BPF-LSM "
                                                               "on this kernel") +
                                ". Sigkill lands before the new program's first instruction"))
    return plans or [AttachError(f"{hook.name}: needs kprobes or BPF-LSM, and this kernel has neither")]


def _function_candidates(hook: Hook, features, overrides: bool, symbols) -> list:
    name = hook.name
    plans: list = []
    if overrides:
        lsm = lsm_hook_for(name, symbols)
        if features.lsm and lsm:
            plans.append(AttachPlan("th_lsm", lsm, f"BPF-LSM {lsm} (Override returns the error)"))
        if features.fmod_ret and name.startswith("security_"):
            plans.append(AttachPlan("th_fmod_ret", name, f"fmod_ret {name} (Override returns the error)"))
        if features.kprobe and features.override_return:
            plans.append(AttachPlan("th_kprobe_override", name, f"kprobe {name} with bpf_override_return"))
        return plans or [AttachError(f"{name}: Override needs BPF-LSM or fmod_ret on a security_* function, "
                                     "or bpf_override_return; this kernel offers none for it")]
    if features.kprobe:
        plans.append(AttachPlan("th_kprobe", name, f"kprobe {name}"))
    if features.fentry:
        plans.append(AttachPlan("th_fentry", name, f"fentry {name}" + ("" if plans else " (no kprobes on this kernel)")))
    if name in FILE_OPEN_FALLBACK_HOOKS:    # last: used where kprobe/fentry are missing or fail
        plans.append(_open_exit_candidate(hook, features, False, "no kprobe or fentry attached"))
    return plans or [AttachError(f"{name}: this kernel has no kprobes and no fentry, and {name} is not a syscall, "
                                 "exec or file-open hook with a tracepoint fallback")]


def _open_exit_candidate(hook: Hook, features, overrides: bool, why: str) -> AttachPlan | AttachError:
    """A file-open hook seen at the exit of the open family (th_open_exit):
    it can read only the file (argument 0), after the open has happened."""
    if overrides:
        return AttachError(f"{hook.name}: Override needs the open to be refused before it happens; here "
                           f"{why}, and the fallback sees the open at syscall exit, when the file is "
                           "already open (Sigkill and Post work there)")
    other = [a for a in hook.args if a.index != 0 or a.base_type != "file"]
    if other:
        return AttachError(f"{hook.name}: the syscall-exit fallback ({why}) provides only argument 0 as a "
                           f"file, not index {other[0].index} ({other[0].type})")
    if not features.raw_tracepoint:
        return AttachError(f"{hook.name}: {why}, and no raw tracepoints for the syscall-exit fallback")
    # security_file_open runs for 32-bit programs' opens too: their numbers as well
    nrs = tuple(SYSCALLS_X86_64[n] for n in OPEN_SYSCALLS)
    nrs32 = tuple(SYSCALLS_I386[n] for n in OPEN_SYSCALLS)
    return AttachPlan("th_open_exit", hook.name,
                      f"raw_tp sys_exit of {', '.join(OPEN_SYSCALLS)} (x86_64 and i386), the returned "
                      f"descriptor's file resolved in the kernel; fallback: {why} (sees the completed open: "
                      "Post and Sigkill, no Override)", syscall_nrs=nrs, syscall_nrs32=nrs32)
