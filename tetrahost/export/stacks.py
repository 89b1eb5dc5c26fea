"""Stack traces (Post's kernelStackTrace / userStackTrace) as Tetragon renders
them: a list of StackTraceEntry {address, offset, symbol, module}.

The kernel side stores each stack in its hook's stack_traces map and puts the
stack's id in the event (bpf_get_stackid); the addresses are resolved here:
kernel ones with /proc/kallsyms, user ones with the process's /proc/PID/maps
and the ELF symbols of the mapped file.  "address" is left out (0) unless
export.stack_addresses is on: addresses defeat KASLR/ASLR for whoever reads
the events (Tetragon's expose-stack-addresses option is off by default too).
"""
from __future__ import annotations

import bisect
import os
import struct
from functools import lru_cache

from tetrahost.bpf.native import lib
from tetrahost.elf import ElfFile

_FRAME = struct.Struct("<Q")


def frames(raw: bytes) -> list[int]:
    """The addresses of a stack map value: up to TH_STACK_DEPTH, zero ends it."""
    out = []
    for (addr,) in _FRAME.iter_unpack(raw[:lib.TH_STACK_DEPTH * 8]):
        if addr == 0:
            break
        out.append(addr)
    return out


class KernelSymbols:
    """/proc/kallsyms, read once (the kernel's text does not move; a module
    loaded later is seen after reload())."""

    def __init__(self, path: str = "/proc/kallsyms"):
        self.path = path
        self.addrs: list[int] = []
        self.names: list[tuple[str, str]] = []
        self.reload()

    def reload(self) -> None:
        entries = []
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW" and (addr := int(parts[0], 16)):
                        module = parts[3].strip("[]") if len(parts) > 3 else ""
                        entries.append((addr, parts[2], module))
        except (OSError, ValueError):
            entries = []        # unreadable (or addresses hidden: all 0): symbols unknown
        entries.sort()
        self.addrs = [a for a, _, _ in entries]
        self.names = [(n, m) for _, n, m in entries]

    def resolve(self, addr: int) -> tuple[str, int, str]:
        """(symbol, offset into it, module ("" for the kernel itself))."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return "", addr, ""
        name, module = self.names[i]
        return name, addr - self.addrs[i], module


def _elf_symbols(path: str) -> tuple[list[tuple[int, int]], list[str], list[tuple[int, int, int]]]:
    """(sorted (value, size) of function symbols, their names, PT_LOAD (offset,
    vaddr, filesz)) of an ELF64 file (tetrahost.elf)."""
    elf = ElfFile.read(path)
    loads = [(seg.offset, seg.vaddr, seg.filesz) for seg in elf.load_segments()]
    ordered = sorted(elf.function_symbols().items())
    return [(v, s) for v, (s, _) in ordered], [n for _, (_, n) in ordered], loads


@lru_cache(maxsize=64)
def _elf_symbols_cached(path: str, ino: int, mtime: int):
    try:
        return _elf_symbols(path)
    except (OSError, struct.error, ValueError, IndexError):
        return [], [], []


def _mappings(pid: int, proc: str) -> list[tuple[int, int, int, str]]:
    """Executable file mappings of a process: (start, end, file offset, path)."""
    out = []
    try:
        with open(f"{proc}/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    out.append((start, end, int(parts[2], 16), parts[5].rstrip("\n")))
    except OSError:
        pass            # the process is gone: addresses only
    return out


def resolve_user(pid: int, addr: int, maps, proc: str = "/proc") -> tuple[str, int, str]:
    """(symbol, offset, module: the mapped file) of a user address of pid."""
    for start, end, pgoff, path in maps:
        if start <= addr < end:
            file_off = addr - start + pgoff
            try:
                st = os.stat(f"{proc}/{pid}/root{path}")
                values, names, loads = _elf_symbols_cached(f"{proc}/{pid}/root{path}", st.st_ino, st.st_mtime_ns)
            except OSError:
                return "", file_off, path
            vaddr = next((file_off - o + v for o, v, sz in loads if o <= file_off < o + sz), None)
            if vaddr is not None:
                i = bisect.bisect_right(values, (vaddr, 1 << 64)) - 1
                if i >= 0 and (vaddr < values[i][0] + values[i][1] or values[i][1] == 0):
                    return names[i], vaddr - values[i][0], path
            return "", file_off, path
    return "", addr, ""


class StackRenderer:
    def __init__(self, addresses: bool = False, kallsyms: str = "/proc/kallsyms", proc: str = "/proc"):
        self.addresses = addresses
        self.proc = proc
        self._kallsyms_path = kallsyms
        self._kernel: KernelSymbols | None = None

    @property
    def kernel(self) -> KernelSymbols:
        if self._kernel is None:        # read on the first kernel stack only
            self._kernel = KernelSymbols(self._kallsyms_path)
        return self._kernel

    def _entry(self, addr: int, symbol: str, offset: int, module: str) -> dict:
        entry: dict = {}
        if self.addresses:
            entry["address"] = str(addr)        # uint64 in proto JSON: a string
        if symbol or module:    # unresolved, the "offset" would be the address itself
            entry["offset"] = str(offset)
        if symbol:
            entry["symbol"] = symbol
        if module:
            entry["module"] = module
        return entry

    def kernel_stack(self, raw: bytes) -> list[dict]:
        return [self._entry(a, *self.kernel.resolve(a)) for a in frames(raw)]

    def user_stack(self, pid: int, raw: bytes) -> list[dict]:
        maps = _mappings(pid, self.proc)
        return [self._entry(a, *resolve_user(pid, a, maps, self.proc)) for a in frames(raw)]
