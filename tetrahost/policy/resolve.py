"""`resolve:` on a hook argument: follow struct members from the argument,
over the running kernel's BTF, to the value the argument's `type` reads.

"mm.owner.real_parent.comm" from a `struct linux_binprm *` becomes the
pointer loads the BPF side makes (csrc/events.h struct th_resolve): load
bprm->mm, then mm->owner, then owner->real_parent, and the address of its
comm.  Offsets come from this kernel's BTF, so they are right on every
kernel (what a CO-RE relocation would do), and every load is a
bpf_probe_read_kernel (a NULL or stale pointer reads nothing).

Where the walk starts: the function's BTF prototype (kprobes, BPF-LSM's
bpf_lsm_<hook>), the raw tracepoint's btf_trace_<event> prototype, a
tracepoint field's declared type, or `btfType` (the argument read as a
pointer to that struct, whatever it was declared as).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tetrahost import btf as B
from tetrahost.constants import TH_MAX_RESOLVE_STEPS

MAX_LOADS = TH_MAX_RESOLVE_STEPS      # pointers one `resolve:` path dereferences (csrc/events.h)
MAX_COMPONENTS = 32
_MEMBER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What each non-integer argument type reads, as the struct its kernel side
# takes a pointer to (kernel_cap_t: a typedef of an anonymous struct).
STRUCT_OF_TYPE = {"file": "file", "path": "path", "dentry": "dentry", "linux_binprm": "linux_binprm",
                  "cred": "cred", "user_namespace": "user_namespace", "sock": "sock", "socket": "socket",
                  "skb": "sk_buff", "net_device": "net_device", "sockaddr": "sockaddr",
                  "kernel_cap_t": "kernel_cap_t", "cap_inheritable": "kernel_cap_t",
                  "cap_permitted": "kernel_cap_t", "cap_effective": "kernel_cap_t"}
# argument types a resolved member can be read as an integer for
INTEGER_TYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                           "capability", "syscall64", "fd"})


@dataclass(frozen=True)
class ResolvedPath:
    """How the BPF side gets from the argument's value to what its type reads."""

    loads: tuple[int, ...]    # in order: value = *(u64 *)(value + offset)
    last_offset: int          # then value += last_offset ...
    last_size: int            # ... and, unless 0, the integer of this many bytes read there
    last_signed: bool         # sign-extended
    reached: str              # the member's C type ("char[16]"), for `policy check`


class ResolveError(ValueError):
    """The path does not fit the kernel's types: a policy error at `resolve`."""

    def __init__(self, message: str, detail: str = "resolve", field: str = "resolve"):
        super().__init__(message)
        self.detail = detail
        self.field = field      # the argument's key the error is about (resolve or btfType)


class ResolveUnavailable(LookupError):
    """The walk cannot be done here (no kernel BTF, the function is not in
    it...): says nothing of the policy; the hook cannot load on this kernel."""


def resolve_arg(kind: str, name: str, arg, *, raw: bool = False, subsystem: str = "", event: str = "",
                btf: B.Btf | None = None, fields=None) -> ResolvedPath:
    """The walk for `arg` (model.Arg with resolve) of a hook: kind "kprobe"
    (name: the function), "lsm" (the hook), "tracepoint" (raw: its TP_PROTO
    arguments; else the fields of its format, `fields` or read from tracefs)."""
    components = split_path(arg.resolve)
    if btf is None:
        try:
            btf = B.vmlinux()
        except B.BtfError as exc:
            raise ResolveUnavailable(f"resolve needs the kernel's BTF, and this kernel has none: {exc}") from None
    if arg.btf_type:
        return walk(btf, components, arg.base_type, target_id=btf_type_target(btf, arg.btf_type))
    if kind == "kprobe":
        type_id = function_param(btf, (name,), arg.index)
    elif kind == "lsm":
        type_id = function_param(btf, (f"bpf_lsm_{name}", f"security_{name}"), arg.index)
    elif raw:
        type_id = function_param(btf, (f"btf_trace_{event}",), arg.index, skip=1)
    else:
        if fields is None:
            from tetrahost.tracefs import TracepointError, event_fields
            try:
                fields = event_fields(subsystem, event)
            except TracepointError as exc:
                raise ResolveUnavailable(str(exc)) from None
        if arg.index >= len(fields):
            raise ResolveError(f"{subsystem}/{event} has {len(fields)} fields: there is no index {arg.index} "
                               "to resolve from", "index")
        field = fields[arg.index]
        return walk(btf, components, arg.base_type, target_id=pointer_to(btf, field.type))
    return walk(btf, components, arg.base_type, type_id=type_id)


def split_path(text: str) -> list[str]:
    parts = text.split(".")
    if len(parts) > MAX_COMPONENTS:
        raise ResolveError(f"{len(parts)} members, at most {MAX_COMPONENTS}", "limit")
    for part in parts:
        if not _MEMBER.match(part):
            raise ResolveError(f'"{part[:64]}" is not a member name (expected names separated by dots, '
                               'e.g. "mm.owner.real_parent.comm")', "invalid-value")
    return parts


def btf_type_target(btf: B.Btf, name: str) -> int:
    """`btfType`: the struct or union the argument points to ("task_struct",
    "struct task_struct", "struct task_struct *")."""
    bare = name.strip().rstrip("*").strip()
    kinds = (B.STRUCT, B.UNION)
    for tag, kind in (("struct ", (B.STRUCT,)), ("union ", (B.UNION,))):
        if bare.startswith(tag):
            bare, kinds = bare[len(tag):].strip(), kind
    found = btf.find(bare, *kinds) or btf.find(bare, B.TYPEDEF)
    if found is None or not _MEMBER.match(bare):
        raise ResolveError(f'the kernel\'s BTF has no struct or union "{bare[:64]}"', "btfType", "btfType")
    return found.id


def function_param(btf: B.Btf, names: tuple[str, ...], index: int, skip: int = 0) -> int:
    """The type of parameter `index` of the first of `names` that is a
    function (or a typedef of a pointer to a prototype: btf_trace_*) in the
    BTF; skip: leading parameters that are not the hook's (a raw
    tracepoint's void *__data)."""
    for name in names:
        t = btf.find(name, B.FUNC, B.TYPEDEF)
        if t is None:
            continue
        proto = btf.strip(t.ref)
        if proto.kind == B.PTR:
            proto = btf.strip(proto.ref)
        if proto.kind != B.FUNC_PROTO:
            continue
        params = btf.params(proto)[skip:]
        if index >= len(params):
            raise ResolveError(f"{name} takes {len(params)} argument{'s' if len(params) != 1 else ''}: "
                               f"there is no index {index} to resolve from", "index")
        return params[index][1]
    raise ResolveUnavailable(f"{' / '.join(names)}: not in the kernel's BTF, so the argument's type "
                             "is not known here (give btfType)")


def pointer_to(btf: B.Btf, ctype: str) -> int:
    """A tracepoint field's declared C type ("struct task_struct *"): the
    struct it points to, found by name."""
    m = re.match(r"^(?:const\s+)?(struct|union)\s+(\w+)\s*\*$", ctype.strip())
    if not m:
        raise ResolveError(f'the field is "{ctype[:64]}", not a pointer to a struct: give btfType '
                           "(the struct it points to)", "btfType")
    found = btf.find(m[2], B.STRUCT if m[1] == "struct" else B.UNION)
    if found is None:
        raise ResolveError(f"the kernel's BTF has no {m[1]} {m[2]}", "btfType")
    return found.id


def walk(btf: B.Btf, components: list[str], base_type: str, *, type_id: int = 0, target_id: int = 0) -> ResolvedPath:
    """Follow `components` from a value of type `type_id` (a pointer, as a
    hook argument is), or from a pointer to `target_id` (btfType)."""
    loads: list[int] = []
    pending = 0                  # offset from the current base to the current object
    in_memory = bool(target_id)  # False: the base is the value itself (a register)
    cur = target_id or type_id
    for i, name in enumerate(components):
        at = ".".join(components[:i + 1])
        t, in_memory, pending = _reach_struct(btf, cur, in_memory, pending, loads, name, at)
        found = _member(btf, t, name)
        if found is None:
            raise ResolveError(f'{btf.describe(t.id)} has no member "{name}" (at "{at}")', "no-member")
        bit_offset, member = found
        if member.bitfield_size or bit_offset % 8:
            raise ResolveError(f'{btf.describe(t.id)}.{name} is a bit field, which resolve cannot read '
                               f'(at "{at}")', "bit-field")
        pending += bit_offset // 8
        cur = member.type_id
    if len(loads) > MAX_LOADS:
        raise ResolveError(f"the path dereferences {len(loads)} pointers, at most {MAX_LOADS}", "limit")
    return _finish(btf, cur, pending, loads, base_type, ".".join(components))


def _reach_struct(btf: B.Btf, cur: int, in_memory: bool, pending: int, loads: list[int], name: str, at: str):
    """Dereference pointers until the current object is a struct or union in memory."""
    for _ in range(16):
        t = btf.strip(cur)
        if not in_memory:
            if t.kind != B.PTR:
                raise ResolveError(f'{btf.describe(cur)} is not a pointer: no member "{name}" to follow '
                                   f'(at "{at}")', "not-a-struct")
            cur, in_memory, pending = t.ref, True, 0
            continue
        if t.kind == B.PTR:
            loads.append(pending)
            in_memory, pending = False, 0
            continue
        if t.kind in (B.STRUCT, B.UNION):
            return t, in_memory, pending
        if t.kind == B.FWD:
            raise ResolveError(f"{btf.describe(t.id)} is only declared in the kernel's BTF, its members "
                               f'are unknown (at "{at}")', "not-a-struct")
        what = "void" if t.id == 0 else btf.describe(cur)
        hint = " (give btfType: the struct it points to)" if t.id == 0 else ""
        raise ResolveError(f'{what} is not a struct or union: no member "{name}" (at "{at}"){hint}',
                           "not-a-struct")
    raise ResolveError(f'too many pointers to pointers (at "{at}")', "limit")


def _member(btf: B.Btf, t: B.Type, name: str, depth: int = 0):
    """(bit offset, Member) of `name` in struct/union t, looking into its
    anonymous struct/union members too."""
    for m in btf.members(t):
        if m.name == name:
            return m.bit_offset, m
    for m in btf.members(t):
        inner = btf.strip(m.type_id)
        if not m.name and inner.kind in (B.STRUCT, B.UNION) and depth < 8:
            found = _member(btf, inner, name, depth + 1)
            if found is not None:
                return m.bit_offset + found[0], found[1]
    return None


def _finish(btf: B.Btf, cur: int, pending: int, loads: list[int], base_type: str, path: str) -> ResolvedPath:
    """What the argument's type reads at the member reached."""
    t = btf.strip(cur)
    reached = btf.describe(cur)
    done = lambda size=0, signed=False: ResolvedPath(tuple(loads), pending, size, signed, reached)  # noqa: E731
    if base_type == "string":
        if t.kind == B.ARRAY and _is_char(btf, t.ref):
            return done()
        if t.kind == B.PTR and _is_char(btf, t.ref):
            loads.append(pending)
            pending = 0
            return ResolvedPath(tuple(loads), 0, 0, False, reached)
        raise ResolveError(f'"{path}" is {reached}: a string argument reads a char array or a char pointer',
                           "type-mismatch")
    if base_type in STRUCT_OF_TYPE:
        want = STRUCT_OF_TYPE[base_type]
        if _is_named(btf, cur, want):
            return done()
        if t.kind == B.PTR and _is_named(btf, t.ref, want):
            loads.append(pending)
            return ResolvedPath(tuple(loads), 0, 0, False, reached)
        what = "kernel_cap_t" if want == "kernel_cap_t" else f"struct {want}"
        raise ResolveError(f'"{path}" is {reached}: a {base_type} argument reads a {what} '
                           "(or a pointer to one)", "type-mismatch")
    if base_type in INTEGER_TYPES:
        if t.kind == B.INT and t.size in (1, 2, 4, 8):
            return done(t.size, bool(btf.int_encoding(t) & B.INT_SIGNED))
        if t.kind in (B.ENUM, B.ENUM64) and t.size in (1, 2, 4, 8):
            return done(t.size, t.kind_flag)
        if t.kind == B.PTR and base_type in ("int64", "uint64"):
            return done(8, False)
        raise ResolveError(f'"{path}" is {reached}: a {base_type} argument reads an integer', "type-mismatch")
    raise ResolveError(f"a {base_type} argument cannot be resolved (resolve reads integers, strings and "
                       f"{', '.join(sorted(set(STRUCT_OF_TYPE) - {'cap_inheritable', 'cap_permitted', 'cap_effective'}))})",
                       "type")


def _is_char(btf: B.Btf, type_id: int) -> bool:
    t = btf.strip(type_id)
    return t.kind == B.INT and t.size == 1


def _is_named(btf: B.Btf, type_id: int, name: str) -> bool:
    """type_id is (a typedef/qualifier chain over) the struct `name`, or the typedef `name`."""
    t = btf.type(type_id)
    for _ in range(16):
        if t.name == name and t.kind in (B.STRUCT, B.UNION, B.TYPEDEF):
            return True
        if t.kind not in B.MODIFIERS:
            return False
        t = btf.type(t.ref)
    return False
