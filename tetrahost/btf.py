"""The running kernel's BTF (/sys/kernel/btf/vmlinux), read in pure Python.

Only what the policy front end needs to follow struct members (`resolve:` on
hook arguments, tetrahost/policy/resolve.py): types by id and by name,
struct/union members with their offsets, function prototypes.  Pure Python
on purpose: policies are validated in a worker process that must not need
the native extension, and one scan of the ~5 MB file takes a fraction of a
second (done once per process, see `vmlinux()`).

Format: the kernel's Documentation/bpf/btf.rst (a header, then the type
records, then the string table).
"""
from __future__ import annotations

import os
import struct
from array import array
from dataclasses import dataclass

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F

# BTF_KIND_* numbers
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
KIND_NAMES = {INT: "int", PTR: "pointer", ARRAY: "array", STRUCT: "struct", UNION: "union", ENUM: "enum",
              FWD: "forward declaration", TYPEDEF: "typedef", VOLATILE: "volatile", CONST: "const",
              RESTRICT: "restrict", FUNC: "function", FUNC_PROTO: "function prototype", VAR: "variable",
              DATASEC: "data section", FLOAT: "float", DECL_TAG: "decl tag", TYPE_TAG: "type tag",
              ENUM64: "enum"}
# qualifiers that only annotate the type they point to
MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
# bytes that follow the 12-byte record: fixed, and per vlen entry
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
          FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}
# kinds looked up by name
_NAMED = frozenset({STRUCT, UNION, TYPEDEF, FUNC, FWD, ENUM, ENUM64, INT})
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


class BtfError(ValueError):
    pass


@dataclass(frozen=True)
class Member:
    name: str             # "" for an anonymous struct/union member
    type_id: int
    bit_offset: int
    bitfield_size: int    # 0: not a bit field


@dataclass(frozen=True)
class Type:
    id: int
    kind: int
    name: str
    size: int             # bytes: INT, STRUCT, UNION, ENUM; 0 otherwise
    ref: int              # the type pointed to / qualified / an array's element / a prototype's return
    vlen: int
    kind_flag: bool
    record: int           # offset of the record in the data (extra data follows it)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind {self.kind}")


class Btf:
    def __init__(self, data: bytes, source: str = VMLINUX):
        self.source = source
        self.data = data
        if len(data) < 24:
            raise BtfError(f"{source}: too short for a BTF header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise BtfError(f"{source}: not BTF (magic {magic:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._types_at = hdr_len + type_off
        self._strings_at = hdr_len + str_off
        self._strings_end = self._strings_at + str_len
        self._records = array("I", [0])          # type id -> record offset (id 0: void)
        self._by_name: dict[str, list[int]] = {}
        self._scan(self._types_at, self._types_at + type_len)

    def _scan(self, pos: int, end: int) -> None:
        data, records, named = self.data, self._records, []
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            records.append(pos)
            if kind in _NAMED and name_off:
                named.append((name_off, len(records) - 1))
            fixed, each = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + each * vlen
        for name_off, type_id in named:
            self._by_name.setdefault(self.string(name_off), []).append(type_id)

    def string(self, offset: int) -> str:
        start = self._strings_at + offset
        end = self.data.index(b"\0", start, self._strings_end)
        return self.data[start:end].decode("utf-8", "replace")

    def type(self, type_id: int) -> Type:
        if type_id == 0:
            return Type(0, 0, "void", 0, 0, 0, False, 0)
        if not 0 < type_id < len(self._records):
            raise BtfError(f"{self.source}: no type id {type_id}")
        pos = self._records[type_id]
        name_off, info, size_or_type = struct.unpack_from("<III", self.data, pos)
        kind = (info >> 24) & 0x1F
        sized = kind in (INT, STRUCT, UNION, ENUM, ENUM64, DATASEC, FLOAT)
        ref = size_or_type if not sized else 0
        if kind == ARRAY:
            ref = struct.unpack_from("<I", self.data, pos + 12)[0]
        return Type(type_id, kind, self.string(name_off) if name_off else "", size_or_type if sized else 0,
                    ref, info & 0xFFFF, bool(info >> 31), pos)

    def find(self, name: str, *kinds: int) -> Type | None:
        """The first type called `name` of one of `kinds`."""
        for type_id in self._by_name.get(name, ()):
            t = self.type(type_id)
            if t.kind in kinds:
                return t
        return None

    def members(self, t: Type) -> list[Member]:
        out = []
        for i in range(t.vlen):
            name_off, type_id, offset = struct.unpack_from("<III", self.data, t.record + 12 + 12 * i)
            bits, size = (offset & 0xFFFFFF, offset >> 24) if t.kind_flag else (offset, 0)
            out.append(Member(self.string(name_off) if name_off else "", type_id, bits, size))
        return out

    def params(self, proto: Type) -> list[tuple[str, int]]:
        """A function prototype's parameters: (name, type id)."""
        out = []
        for i in range(proto.vlen):
            name_off, type_id = struct.unpack_from("<II", self.data, proto.record + 12 + 8 * i)
            out.append((self.string(name_off) if name_off else "", type_id))
        return out

    def int_encoding(self, t: Type) -> int:
        """An INT's encoding bits (INT_SIGNED, INT_CHAR, INT_BOOL)."""
        return (struct.unpack_from("<I", self.data, t.record + 12)[0] >> 24) & 0xF

    def array_length(self, t: Type) -> int:
        return struct.unpack_from("<I", self.data, t.record + 20)[0]

    def strip(self, type_id: int) -> Type:
        """The type under typedefs and qualifiers."""
        t = self.type(type_id)
        for _ in range(64):
            if t.kind not in MODIFIERS:
                return t
            t = self.type(t.ref)
        raise BtfError(f"{self.source}: type {type_id}: qualifiers loop")

    def describe(self, type_id: int) -> str:
        """A C-like name: "struct task_struct *", "char[16]", "pid_t"."""
        t = self.type(type_id)
        if t.kind in (STRUCT, UNION, ENUM, FWD):
            tag = {STRUCT: "struct", UNION: "union", ENUM: "enum"}.get(t.kind, "struct")
            return f"{tag} {t.name or '(anonymous)'}"
        if t.kind == PTR:
            return f"{self.describe(t.ref)} *"
        if t.kind == ARRAY:
            return f"{self.describe(t.ref)}[{self.array_length(t)}]"
        if t.kind in (CONST, VOLATILE, RESTRICT, TYPE_TAG):
            return self.describe(t.ref)
        if t.kind == FUNC_PROTO:
            return "function"
        return t.name or t.kind_name


_cache: dict[str, tuple[tuple[int, int], Btf]] = {}


def vmlinux(path: str = VMLINUX) -> Btf:
    """The kernel's BTF, parsed once per process (again if the file changed).
    Raises BtfError (an OSError's text when the file is missing or unreadable)."""
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_size)
        cached = _cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        with open(path, "rb") as f:
            btf = Btf(f.read(), path)
    except OSError as exc:
        raise BtfError(f"{path}: {exc.strerror}") from None
    _cache[path] = (key, btf)
    return btf
