"""USDT argument specs (x86_64) compiled into struct th_usdt_arg.

A note's argument string is space-separated `SIZE@OPERAND`, SIZE being the
value's bytes (negative: signed) and OPERAND the assembler operand the
compiler chose (GNU as, AT&T syntax):

    -4@%edi        register (or a part of one)       -> TH_USDT_REG
    8@-16(%rbp)    memory at register + displacement -> TH_USDT_MEM
    8@(%rax)       the same, displacement 0
    -4@$5          a constant                        -> TH_USDT_CONST

Operands that need more than a register and a displacement (an index
register, a symbol, %rip-relative addressing, segment prefixes) are refused
with the operand named: the kernel side reads only these three forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tetrahost.bpf.native import lib

# Byte offset of each 64-bit register in the kernel's struct pt_regs (x86_64,
# arch/x86/include/asm/ptrace.h: r15 first, 8 bytes each; a stable layout).
_PT_REGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
            "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")
_OFFSET = {name: 8 * i for i, name in enumerate(_PT_REGS)}


def _register_names() -> dict[str, str]:
    """Assembler register name (any width whose bytes start at bit 0) ->
    pt_regs member."""
    names = {}
    for r in ("ax", "bx", "cx", "dx"):
        names.update({f"r{r}": r, f"e{r}": r, r: r, f"{r[0]}l": r})
    for r in ("si", "di", "bp", "sp"):
        names.update({f"r{r}": r, f"e{r}": r, r: r, f"{r}l": r})
    for n in range(8, 16):
        names.update({f"r{n}": f"r{n}", f"r{n}d": f"r{n}", f"r{n}w": f"r{n}", f"r{n}b": f"r{n}"})
    return names


_REGISTERS = _register_names()
_HIGH_BYTE = frozenset({"ah", "bh", "ch", "dh"})     # bits 8-15: not at the start of the register
_SPEC = re.compile(r"^(-?\d+)@(.+)$")
_CONST = re.compile(r"^\$(-?(?:0x[0-9a-fA-F]+|\d+))$")
_REG = re.compile(r"^%([a-z0-9]+)$")
_MEM = re.compile(r"^(-?(?:0x[0-9a-fA-F]+|\d+))?\(%([a-z0-9]+)\)$")
MAX_USDT_ARGS = 12          # <sys/sdt.h> passes at most 12


class ArgSpecError(ValueError):
    """An argument spec the kernel side cannot read; says which and why."""


@dataclass(frozen=True)
class UsdtArg:
    loc: int               # enum th_usdt_arg_loc
    size: int              # 1, 2, 4, 8
    signed: bool
    value: int = 0         # the constant, or the displacement
    register: str = ""     # pt_regs member ("di", "r12"), "" for a constant
    text: str = ""         # the spec as written, for messages

    @property
    def in_memory(self) -> bool:
        return self.loc == lib.TH_USDT_MEM

    def fill(self, c) -> None:
        """Write into a struct th_usdt_arg."""
        c.loc, c.size, c.is_signed = self.loc, self.size, int(self.signed)
        c.value = self.value
        c.reg_off = _OFFSET[self.register] if self.register else 0


def parse_args(text: str) -> list[UsdtArg]:
    """Every argument of a note's argument string, in order."""
    specs = text.split()
    if len(specs) > MAX_USDT_ARGS:
        raise ArgSpecError(f"{len(specs)} arguments; <sys/sdt.h> passes at most {MAX_USDT_ARGS}")
    return [parse_arg(spec) for spec in specs]


def parse_arg(spec: str) -> UsdtArg:
    m = _SPEC.match(spec)
    if m is None:
        raise ArgSpecError(f"argument spec {spec!r} is not SIZE@OPERAND")
    size, operand = int(m.group(1)), m.group(2)
    if abs(size) not in (1, 2, 4, 8):
        raise ArgSpecError(f"argument spec {spec!r}: size {size} is not 1, 2, 4 or 8 bytes (negative: signed)")
    signed, size = size < 0, abs(size)
    if (c := _CONST.match(operand)) is not None:
        return UsdtArg(lib.TH_USDT_CONST, size, signed, _wrap(int(c.group(1), 0), spec), text=spec)
    if (r := _REG.match(operand)) is not None:
        return UsdtArg(lib.TH_USDT_REG, size, signed, register=_register(r.group(1), spec), text=spec)
    if (mem := _MEM.match(operand)) is not None:
        disp = int(mem.group(1), 0) if mem.group(1) else 0
        register = _register(mem.group(2), spec)
        if register == "ip":
            raise ArgSpecError(f"argument spec {spec!r}: %rip-relative operands are not supported")
        return UsdtArg(lib.TH_USDT_MEM, size, signed, _wrap(disp, spec), register=register, text=spec)
    raise ArgSpecError(f"argument spec {spec!r}: operand {operand!r} is not a register, a constant or "
                       "register+displacement memory (index registers, symbols and segments are not supported)")


def _register(name: str, spec: str) -> str:
    if name in ("rip", "eip"):
        return "ip"
    if name in _HIGH_BYTE:
        raise ArgSpecError(f"argument spec {spec!r}: high-byte register %{name} is not supported")
    member = _REGISTERS.get(name)
    if member is None:
        raise ArgSpecError(f"argument spec {spec!r}: unknown register %{name}")
    return member


def _wrap(value: int, spec: str) -> int:
    """Constants and displacements as the int64 the record holds."""
    if not -(1 << 63) <= value < (1 << 64):
        raise ArgSpecError(f"argument spec {spec!r}: {value} does not fit in 64 bits")
    return value - (1 << 64) if value >= (1 << 63) else value
