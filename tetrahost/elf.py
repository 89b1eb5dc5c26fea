"""A bounded reader of 64-bit little-endian ELF files: headers, sections,
loadable segments, symbols.

Shared by the USDT note reader (tetrahost/usdt/notes.py) and the user stack
symbolizer (tetrahost/export/stacks.py).  Every read is checked against the
file's size: a malformed or hostile file is an ElfError naming it, never an
exception from deep down.  Only what the agent runs on (x86_64) is read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_HEADERS = 1 << 16      # sections/segments read: more is not a real binary
SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_FUNC = 2
PT_LOAD = 1


class ElfError(ValueError):
    """The file is not an ELF file this reader takes; the message names it."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int


class ElfFile:
    def __init__(self, path: str, data: bytes):
        self.path, self.data = path, data
        if data[:4] != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ElfError(f"{path}: only 64-bit little-endian ELF files are read "
                           f"(class {data[4]}, data {data[5]})")
        (self.phoff, self.shoff, phentsize, self.phnum, shentsize, self.shnum,
         self.shstrndx) = self.unpack("<32xQQ6xHHHHH", 0)
        if (self.phnum and phentsize != 56) or (self.shnum and shentsize != 64):
            raise ElfError(f"{path}: unexpected ELF header entry sizes ({phentsize}, {shentsize})")
        if self.phnum > MAX_HEADERS or self.shnum > MAX_HEADERS:
            raise ElfError(f"{path}: implausible number of ELF headers")

    @classmethod
    def read(cls, path: str) -> "ElfFile":
        try:
            with open(path, "rb") as f:
                return cls(path, f.read())
        except OSError as exc:
            raise ElfError(f"{path}: {exc.strerror}") from None

    def unpack(self, fmt: str, at: int) -> tuple:
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.data):
            raise ElfError(f"{self.path}: truncated ELF file (needs {size} bytes at offset {at:#x}, "
                           f"the file has {len(self.data)})")
        return struct.unpack_from(fmt, self.data, at)

    def bytes(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise ElfError(f"{self.path}: {what} ({size} bytes at {offset:#x}) lie outside the file")
        return self.data[offset:offset + size]

    def section_headers(self) -> list[Section]:
        raw = [self.unpack("<IIQQQQIIQQ", self.shoff + i * 64) for i in range(self.shnum)]
        if not raw:
            return []
        if self.shstrndx >= len(raw):
            raise ElfError(f"{self.path}: section name table index {self.shstrndx} out of range")
        str_off, str_size = raw[self.shstrndx][4], raw[self.shstrndx][5]
        names = self.bytes(str_off, str_size, "section names")
        return [Section(_cstring(names, h[0]), h[1], h[3], h[4], h[5], h[6], h[9]) for h in raw]

    def sections(self) -> dict[str, Section]:
        """By name (the first of a name)."""
        out: dict[str, Section] = {}
        for s in self.section_headers():
            out.setdefault(s.name, s)
        return out

    def load_segments(self) -> list[Segment]:
        segments = []
        for i in range(self.phnum):
            p_type, _flags, offset, vaddr, _paddr, filesz, memsz, _align = self.unpack(
                "<IIQQQQQQ", self.phoff + i * 56)
            if p_type == PT_LOAD:
                segments.append(Segment(vaddr, offset, filesz, memsz))
        return segments

    def function_symbols(self) -> dict[int, tuple[int, str]]:
        """value -> (size, name) of the defined functions of .symtab and .dynsym."""
        headers = self.section_headers()
        out: dict[int, tuple[int, str]] = {}
        for sh in headers:
            if sh.type not in (SHT_SYMTAB, SHT_DYNSYM) or sh.entsize < 24 or sh.link >= len(headers):
                continue
            table = self.bytes(sh.offset, sh.size, f"symbol table {sh.name}")
            strtab = headers[sh.link]
            names = self.bytes(strtab.offset, strtab.size, f"string table {strtab.name}")
            for off in range(0, len(table) - 23, sh.entsize):
                st_name, st_info, _, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", table, off)
                if st_info & 0xF != STT_FUNC or not st_value or not st_shndx:     # defined functions
                    continue
                out.setdefault(st_value, (st_size, _cstring(names, st_name)))
        return out


def _cstring(blob: bytes, at: int) -> str:
    end = blob.find(b"\0", at)
    return blob[at:end if end >= 0 else None].decode("latin-1")
