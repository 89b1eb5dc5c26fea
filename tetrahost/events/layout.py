"""struct.Struct formats derived from the cffi view of csrc/events.h.

Reading fields one by one through cffi costs ~100 ns each; one
Struct.unpack_from of the fixed part costs about as much as two.  The format
is computed here from the layout cffi compiled, so there is still one
definition of every record (csrc/events.h) and no hand-copied one.
"""
from __future__ import annotations

import struct

from tetrahost.bpf.native import ffi

_PRIMITIVES = {
    ("uint8_t", 1): "B", ("int8_t", 1): "b", ("char", 1): "B",
    ("uint16_t", 2): "H", ("int16_t", 2): "h",
    ("uint32_t", 4): "I", ("int32_t", 4): "i",
    ("uint64_t", 8): "Q", ("int64_t", 8): "q",
}


class Layout:
    """Flattened fixed part of a C struct: `fields` are dotted names, arrays
    expanded as name[i]; a trailing flexible byte array is left out (that is
    the variable part, read by offset)."""

    def __init__(self, ctype: str, stop_at: str | None = None):
        self.ctype = ctype
        self.fields: list[str] = []
        fmt: list[str] = []
        self._end = 0
        self._flatten(ffi.typeof(ctype), 0, "", fmt, stop_at)
        self.struct = struct.Struct("<" + "".join(fmt))
        self.size = self.struct.size
        self.index = {name: i for i, name in enumerate(self.fields)}

    def _flatten(self, ctype, base: int, prefix: str, fmt: list[str], stop_at):
        for name, field in ctype.fields:
            if stop_at is not None and prefix + name == stop_at:
                return
            self._place(field.type, base + field.offset, prefix + name, fmt, stop_at)

    def _place(self, ftype, offset: int, name: str, fmt: list[str], stop_at):
        if offset > self._end:
            fmt.append(f"{offset - self._end}x")
            self._end = offset
        if ftype.kind == "struct":
            self._flatten(ftype, offset, name + ".", fmt, stop_at)
        elif ftype.kind == "array":
            item = ftype.item
            for i in range(ftype.length):
                self._place(item, offset + i * ffi.sizeof(item), f"{name}[{i}]", fmt, stop_at)
        elif ftype.kind == "primitive":
            code = _PRIMITIVES[(ftype.cname, ffi.sizeof(ftype))]
            fmt.append(code)
            self.fields.append(name)
            self._end = offset + ffi.sizeof(ftype)
        else:
            raise TypeError(f"{self.ctype}.{name}: cannot lay out a {ftype.kind}")

    def slice(self, prefix: str) -> slice:
        """Index range of the consecutive fields whose names start with prefix."""
        hits = [i for name, i in self.index.items() if name.startswith(prefix)]
        return slice(min(hits), max(hits) + 1)
