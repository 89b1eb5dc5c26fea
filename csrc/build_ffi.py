"""cffi builder (API mode, out of line) for tetrahost._libbpf.

Declarations come from two files and are never retyped here:
- csrc/libbpf.cdef: the libbpf functions we call (checked against the system
  <bpf/libbpf.h> when the extension compiles);
- csrc/ring.cdef: the ring buffer reader in csrc/ring.c;
- csrc/events.h, the region between CDEF-BEGIN and CDEF-END: every record the
  kernel sends, so Python reads exactly the layout the BPF programs write.
"""
from __future__ import annotations

import pathlib

from cffi import FFI

CSRC = pathlib.Path(__file__).resolve().parent


def events_cdef() -> str:
    text = (CSRC / "events.h").read_text()
    begin, end = "/* CDEF-BEGIN */", "/* CDEF-END */"
    return text[text.index(begin) + len(begin):text.index(end)]


def make_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef((CSRC / "libbpf.cdef").read_text())
    ffi.cdef((CSRC / "ring.cdef").read_text())
    ffi.cdef(events_cdef(), packed=False)
    ffi.set_source(
        "tetrahost._libbpf",
        '#include <bpf/libbpf.h>\n#include <bpf/bpf.h>\n#include "events.h"\n'
        + (CSRC / "shim.c").read_text() + (CSRC / "ring.c").read_text(),
        libraries=["bpf"],
        include_dirs=[str(CSRC)],
        extra_compile_args=["-O2", "-Wall"],
    )
    return ffi


ffibuilder = make_ffi()

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tmpdir", default="build/ffi")
    args = parser.parse_args()
    print(ffibuilder.compile(tmpdir=args.tmpdir, verbose=False))
