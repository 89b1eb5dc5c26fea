"""USDT notes and argument specs: the .note.stapsdt parser on ELF files built
here byte by byte (good ones, and broken in each way a file can be), the
argument-spec compiler, and a hook's resolution against a binary (Set on a
register argument refused with the reason)."""
from __future__ import annotations

import struct

import pytest

from tetrahost.bpf.native import ffi, lib
from tetrahost.policy.model import Action, Arg, Hook, Selector
from tetrahost.policy.vocab import ArgKind
from tetrahost.usdt.argspec import ArgSpecError, parse_arg, parse_args
from tetrahost.usdt.configure import resolve
from tetrahost.usdt.notes import UsdtError, find_target, read_notes

TEXT_VADDR, TEXT_OFF = 0x401000, 0x1000     # the code segment: file offset = vaddr - 0x400000
DATA_VADDR, DATA_OFF = 0x404000, 0x3000


def note(provider: str, name: str, pc: int, base: int, sem: int, args: str) -> bytes:
    desc = struct.pack("<QQQ", pc, base, sem) + b"\0".join(s.encode() for s in (provider, name, args)) + b"\0"
    owner = b"stapsdt\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)        # noqa: E731
    return struct.pack("<III", len(owner), len(desc), 3) + pad(owner) + pad(desc)


def elf(notes: bytes, base_addr: int = 0x402000, segments=None) -> bytes:
    """A minimal 64-bit little-endian ELF: PT_LOAD segments, then sections
    .stapsdt.base, .note.stapsdt and .shstrtab."""
    segments = segments if segments is not None else [(TEXT_OFF, TEXT_VADDR, 0x2000), (DATA_OFF, DATA_VADDR, 0x100)]
    names = b"\0.stapsdt.base\0.note.stapsdt\0.shstrtab\0"
    phoff = 64
    data_at = phoff + 56 * len(segments)
    note_at, names_at = data_at, data_at + len(notes)
    shoff = names_at + len(names) + (-(names_at + len(names)) % 8)
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, shoff, 0, 64, 56, len(segments), 64, 4, 3)
    phdrs = b"".join(struct.pack("<IIQQQQQQ", 1, 5, off, vaddr, vaddr, size, size, 0x1000)
                     for off, vaddr, size in segments)
    body = header + phdrs + notes + names
    body += b"\0" * (shoff - len(body))
    sh = lambda name, typ, addr, off, size: struct.pack("<IIQQQQIIQQ", name, typ, 2, addr, off, size, 0, 0, 1, 0)  # noqa: E731
    sections = (sh(0, 0, 0, 0, 0) + sh(1, 1, base_addr, 0, 1) + sh(15, 7, 0, note_at, len(notes))
                + sh(29, 3, 0, names_at, len(names)))
    return body + sections


GOOD = note("app", "start", 0x401234, 0x402000, 0x404010, "-4@-4(%rbp) 8@%rdi") + \
    note("app", "stop", 0x401300, 0x402000, 0, "")


def test_notes_are_read_with_their_points_semaphores_and_argument_specs():
    notes = read_notes("/x/app", elf(GOOD))
    assert [(n.provider, n.name, n.pc, n.semaphore, n.args) for n in notes] == [
        ("app", "start", 0x401234, 0x404010, "-4@-4(%rbp) 8@%rdi"), ("app", "stop", 0x401300, 0, "")]


def test_a_point_maps_to_file_offsets_of_its_segment():
    target = find_target("/x/app", "app", "start", elf(GOOD))
    assert (target.offset, target.ref_ctr_offset) == (0x1234, 0x3010)
    assert find_target("/x/app", "app", "stop", elf(GOOD)).ref_ctr_offset == 0


def test_a_moved_base_section_moves_the_point():
    """.stapsdt.base now at 0x402010, the notes were written against 0x402000 (prelink)."""
    target = find_target("/x/app", "app", "start", elf(GOOD, base_addr=0x402010))
    assert (target.note.pc, target.offset) == (0x401244, 0x1244)


def test_a_missing_point_lists_those_the_file_has():
    with pytest.raises(UsdtError, match=r"^/x/app: no USDT point app:nope \(the file has: app:start, app:stop\)$"):
        find_target("/x/app", "app", "nope", elf(GOOD))


def test_a_file_without_notes_has_no_points():
    assert read_notes("/x/plain", elf(b"")) == []


@pytest.mark.parametrize("data, message", [
    (b"", "not an ELF file"),
    (b"#!/bin/sh\necho hi\n", "not an ELF file"),
    (b"\x7fELF\x01\x01" + b"\0" * 58, "only 64-bit little-endian"),
    (elf(GOOD)[:40], "truncated ELF file"),
    (elf(GOOD)[:-30], "truncated ELF file"),
    (elf(note("app", "x", 1, 0, 0, "")[:-8] + b"\xff" * 8), "runs past the section|lacks its provider"),
    (elf(struct.pack("<III", 8, 10, 3) + b"stapsdt\0" + b"\1" * 12), "too short"),
    (elf(struct.pack("<III", 8, 4000, 3) + b"stapsdt\0"), "runs past the section"),
    (elf(struct.pack("<III", 8, 28, 3) + b"stapsdt\0" + struct.pack("<QQQ", 1, 0, 0) + b"appx"),
     "lacks its provider, name and argument strings"),
    (elf(note("\xe9t\xe9", "x", 1, 0, 0, "")), "non-ASCII"),
])
def test_a_malformed_file_is_an_error_naming_it(data, message):
    with pytest.raises(UsdtError, match=rf"^/x/bad: .*({message})"):
        find_target("/x/bad", "app", "x", data)


def test_a_point_outside_every_segment_is_an_error():
    data = elf(note("app", "x", 0x900000, 0, 0, ""))
    with pytest.raises(UsdtError, match=r"^/x/app: USDT point app:x at 0x900000 is in no loadable segment"):
        find_target("/x/app", "app", "x", data)


def test_the_agents_own_python_is_read_whatever_it_holds():
    """A real binary of this host: read without error (it may have no points)."""
    import sys
    assert isinstance(read_notes(sys.executable), list)


# -- argument specs -------------------------------------------------------------

@pytest.mark.parametrize("spec, loc, size, signed, value, reg_off", [
    ("-4@%edi", lib.TH_USDT_REG, 4, True, 0, 14 * 8),
    ("8@%rax", lib.TH_USDT_REG, 8, False, 0, 10 * 8),
    ("1@%r12b", lib.TH_USDT_REG, 1, False, 0, 3 * 8),
    ("-2@%si", lib.TH_USDT_REG, 2, True, 0, 13 * 8),
    ("8@-16(%rbp)", lib.TH_USDT_MEM, 8, False, -16, 4 * 8),
    ("-4@0x10(%rsp)", lib.TH_USDT_MEM, 4, True, 16, 19 * 8),
    ("4@(%r9)", lib.TH_USDT_MEM, 4, False, 0, 8 * 8),
    ("-4@$5", lib.TH_USDT_CONST, 4, True, 5, 0),
    ("8@$-1", lib.TH_USDT_CONST, 8, False, -1, 0),
    ("8@$0xffffffffffffffff", lib.TH_USDT_CONST, 8, False, -1, 0),
])
def test_argument_specs_compile_to_the_kernel_record(spec, loc, size, signed, value, reg_off):
    c = ffi.new("struct th_usdt_arg *")
    parse_arg(spec).fill(c)
    assert (c.loc, c.size, c.is_signed, c.value, c.reg_off) == (loc, size, int(signed), value, reg_off)


@pytest.mark.parametrize("spec, message", [
    ("%edi", "not SIZE@OPERAND"),
    ("3@%edi", "size 3 is not 1, 2, 4 or 8"),
    ("4@%xmm0", "unknown register %xmm0"),
    ("1@%ah", "high-byte register %ah"),
    ("8@foo(%rip)", "is not a register, a constant"),
    ("8@8(%rip)", "%rip-relative"),
    ("4@(%rax,%rbx,4)", "index registers"),
    ("8@%fs:0x28", "is not a register, a constant"),
    ("8@$99999999999999999999999", "does not fit in 64 bits"),
])
def test_unreadable_argument_specs_are_refused_with_the_spec_named(spec, message):
    with pytest.raises(ArgSpecError) as exc:
        parse_arg(spec)
    assert repr(spec) in str(exc.value) and message in str(exc.value)


def test_a_note_with_too_many_arguments_is_refused():
    with pytest.raises(ArgSpecError, match="13 arguments"):
        parse_args(" ".join(["4@%edi"] * 13))


# -- a hook resolved against its binary ------------------------------------------

def _hook(path: str, name: str, sets: int | None = None, indexes=(0,)) -> Hook:
    args = tuple(Arg(index=i, type="int32", base_type="int32", kind=ArgKind.INTEGER, bits=32, signed=True)
                 for i in indexes)
    actions = (Action("Set", arg_index=sets, arg_value=32),) if sets is not None else ()
    return Hook(kind="usdt", name=f"app:{name}", path=path, provider="app", usdt_name=name, args=args,
                selectors=(Selector(0, match_actions=actions),))


def test_resolve_fills_the_argument_records_and_finds_the_semaphore(tmp_path):
    binary = tmp_path / "app"
    binary.write_bytes(elf(GOOD))
    cfg = ffi.new("struct th_hook_config *")
    target = resolve(_hook(str(binary), "start", sets=0), cfg)
    assert (target.offset, target.ref_ctr_offset) == (0x1234, 0x3010)
    assert [(a.loc, a.size, a.value) for a in cfg.usdt_args[0:3]] == [
        (lib.TH_USDT_MEM, 4, -4), (lib.TH_USDT_REG, 8, 0), (lib.TH_USDT_NONE, 0, 0)]


def test_set_on_a_register_argument_is_refused_as_not_writable(tmp_path):
    binary = tmp_path / "app"
    binary.write_bytes(elf(GOOD))
    with pytest.raises(UsdtError, match=r"app: USDT point app:start: selectors\[0\]: Set argIndex 1: the "
                       r"argument is in register %rdi \('8@%rdi'\), not in memory: not writable"):
        resolve(_hook(str(binary), "start", sets=1, indexes=(0, 1)), ffi.new("struct th_hook_config *"))


def test_an_argument_the_point_does_not_have_is_refused(tmp_path):
    binary = tmp_path / "app"
    binary.write_bytes(elf(GOOD))
    with pytest.raises(UsdtError, match=r"args\[0\]\.index 0, but the point has 0 argument\(s\)"):
        resolve(_hook(str(binary), "stop"), ffi.new("struct th_hook_config *"))


def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsdtError, match=f"^{fifo}: not a regular file$"):
        resolve(_hook(str(fifo), "start"), ffi.new("struct th_hook_config *"))
