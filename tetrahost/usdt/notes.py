"""USDT probe points of an ELF file: its `.note.stapsdt` notes.

<sys/sdt.h> (SystemTap's, used by glibc, Python, PostgreSQL, JVMs...) leaves
one note per probe point, owner "stapsdt", type 3, whose description holds
three addresses (the point's pc, the address the `.stapsdt.base` section had
at link time, the semaphore or 0) and three NUL-terminated strings: provider,
name and the argument specs ("-4@%edi 8@-16(%rbp)").

A uprobe is placed by file offset: the pc is first corrected by how far
`.stapsdt.base` moved since the note was written (prelink and the like),
then mapped to the file through the PT_LOAD segment that holds it.  The
semaphore's file offset is found the same way: the kernel increments it
(uprobe ref_ctr_offset) while the probe is attached, so the program's
`if (semaphore)` guards run their probes.

Only 64-bit little-endian ELF is read (the agent runs on x86_64); anything
malformed is a UsdtError naming the file, never an exception from deep down.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tetrahost.elf import ElfError, ElfFile, Segment

NT_STAPSDT = 3


class UsdtError(Exception):
    """A binary's USDT notes could not be used; the message names the file."""


@dataclass(frozen=True)
class UsdtNote:
    provider: str
    name: str
    pc: int              # virtual address of the point, already base-corrected
    semaphore: int       # virtual address of the semaphore, 0: none
    args: str            # the argument specs as written ("-4@%edi 8@-16(%rbp)")


@dataclass(frozen=True)
class UsdtTarget:
    note: UsdtNote
    offset: int          # file offset of the point: where the uprobe goes
    ref_ctr_offset: int  # file offset of the semaphore, 0: none


class _Elf(ElfFile):
    """An ELF file with its USDT notes."""

    def notes(self, offset: int, size: int) -> list[tuple[UsdtNote, int]]:
        """(note, the .stapsdt.base address it was written against) of each."""
        blob = self.bytes(offset, size, ".note.stapsdt")
        out, at = [], 0
        while at + 12 <= len(blob):
            namesz, descsz, n_type = struct.unpack_from("<III", blob, at)
            name_at = at + 12
            desc_at = name_at + _align4(namesz)
            end = desc_at + _align4(descsz)
            if end > len(blob):
                raise UsdtError(f"{self.path}: .note.stapsdt: note at {at:#x} runs past the section")
            owner = blob[name_at:name_at + namesz].rstrip(b"\0")
            if owner == b"stapsdt" and n_type == NT_STAPSDT:
                out.append(self._note(blob[desc_at:desc_at + descsz], at))
            at = end
        return out

    def _note(self, desc: bytes, at: int) -> tuple[UsdtNote, int]:
        if len(desc) < 24 + 3:
            raise UsdtError(f"{self.path}: .note.stapsdt: note at {at:#x} is too short ({len(desc)} bytes)")
        pc, base, semaphore = struct.unpack_from("<QQQ", desc, 0)
        strings = desc[24:].split(b"\0")
        if len(strings) < 4:        # provider, name, args and what follows the last NUL
            raise UsdtError(f"{self.path}: .note.stapsdt: note at {at:#x} lacks its provider, name "
                            "and argument strings")
        try:
            provider, name, args = (s.decode("ascii") for s in strings[:3])
        except UnicodeDecodeError:
            raise UsdtError(f"{self.path}: .note.stapsdt: note at {at:#x} has non-ASCII names") from None
        return UsdtNote(provider, name, pc, semaphore, args), base


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _file_offset(elf: _Elf, segments: list[Segment], vaddr: int, what: str) -> int:
    for seg in segments:
        if seg.vaddr <= vaddr < seg.vaddr + max(seg.filesz, seg.memsz):
            if vaddr >= seg.vaddr + seg.filesz:
                raise UsdtError(f"{elf.path}: {what} at {vaddr:#x} is in no file-backed part of a segment")
            return vaddr - seg.vaddr + seg.offset
    raise UsdtError(f"{elf.path}: {what} at {vaddr:#x} is in no loadable segment")


def read_notes(path: str, data: bytes | None = None) -> list[UsdtNote]:
    """Every USDT point of the ELF file at `path` (its bytes: `data`, else read)."""
    return _load(path, data)[1]


def _load(path: str, data: bytes | None) -> tuple[_Elf, list[UsdtNote]]:
    try:
        return _load_notes(path, data)
    except ElfError as exc:
        raise UsdtError(str(exc)) from None


def _load_notes(path: str, data: bytes | None) -> tuple[_Elf, list[UsdtNote]]:
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise UsdtError(f"{path}: {exc.strerror}") from None
    elf = _Elf(path, data)
    sections = elf.sections()
    note = sections.get(".note.stapsdt")
    if note is None:
        return elf, []
    base_section = sections.get(".stapsdt.base")
    out = []
    for found, link_base in elf.notes(note.offset, note.size):
        # the base section moved by this much since the note was written
        shift = base_section.addr - link_base if base_section is not None and link_base else 0
        out.append(UsdtNote(found.provider, found.name, found.pc + shift, found.semaphore, found.args))
    return elf, out


def find_target(path: str, provider: str, name: str, data: bytes | None = None) -> UsdtTarget:
    """Where to attach for the point provider:name of `path`; a UsdtError that
    lists what the file has when it has no such point."""
    elf, notes = _load(path, data)
    matching = [n for n in notes if (n.provider, n.name) == (provider, name)]
    if not matching:
        have = ", ".join(sorted({f"{n.provider}:{n.name}" for n in notes})[:12]) or "none"
        raise UsdtError(f"{path}: no USDT point {provider}:{name} (the file has: {have})")
    if len(matching) > 1:
        # the same point inlined in several places: one uprobe each is not done yet
        raise UsdtError(f"{path}: USDT point {provider}:{name} is at {len(matching)} places; "
                        "tetrahost attaches to points that occur once")
    point = matching[0]
    try:
        segments = elf.load_segments()
    except ElfError as exc:
        raise UsdtError(str(exc)) from None
    offset = _file_offset(elf, segments, point.pc, f"USDT point {provider}:{name}")
    sem = _file_offset(elf, segments, point.semaphore, f"semaphore of {provider}:{name}") if point.semaphore else 0
    return UsdtTarget(point, offset, sem)
