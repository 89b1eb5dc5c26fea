"""A BPF object file: open, configure, load, and its programs and maps."""
from __future__ import annotations

import os

from tetrahost.bpf.maps import Map
from tetrahost.bpf.native import capture_log, check_ptr, check_rc, ffi, lib
from tetrahost.bpf.program import Program


class BpfObject:
    """Open with `BpfObject(path)`, adjust programs/maps, then `load()`.

    Use as a context manager (or call close()): closing unloads the programs
    and maps that nothing else (links, pins) still holds.
    """

    def __init__(self, path: str | os.PathLike, btf_custom_path: str | None = None):
        self.path = os.fspath(path)
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        keep = ffi.new("char[]", btf_custom_path.encode()) if btf_custom_path else ffi.NULL
        opts.btf_custom_path = keep
        with capture_log() as lines:
            self._ptr = check_ptr(lib.bpf_object__open_file(self.path.encode(), opts), f"open {self.path}", lines)
        self.programs = self._collect(lib.bpf_object__next_program, Program)
        self.maps = self._collect(lib.bpf_object__next_map, Map)
        self.loaded = False

    def _collect(self, next_fn, cls):
        found, cur = {}, ffi.NULL
        while True:
            cur = next_fn(self._ptr, cur)
            if cur == ffi.NULL:
                return found
            item = cls(self, cur)
            found[item.name] = item

    def load(self) -> "BpfObject":
        """Load into the kernel; a failure raises BpfError with the verifier log."""
        with capture_log() as lines:
            check_rc(lib.bpf_object__load(self._require()), f"load {os.path.basename(self.path)}", lines)
        self.loaded = True
        return self

    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise KeyError(f"{self.path} has no program {name!r} (has: {', '.join(self.programs)})") from None

    def map(self, name: str) -> Map:
        try:
            return self.maps[name]
        except KeyError:
            raise KeyError(f"{self.path} has no map {name!r} (has: {', '.join(self.maps)})") from None

    def close(self) -> None:
        if self._ptr is not None:
            lib.bpf_object__close(self._ptr)
            self._ptr = None

    def _require(self):
        if self._ptr is None:
            raise ValueError(f"{self.path} is closed")
        return self._ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<BpfObject {self.path} programs={list(self.programs)} maps={list(self.maps)}>"
