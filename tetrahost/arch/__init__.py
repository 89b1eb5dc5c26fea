"""The host's syscall ABIs: number tables and the names of the kernel's
syscall entry functions.

A low module (it imports nothing of tetrahost): the policy front end checks
syscall names and lists against the tables, the sensors attach to the entry
functions or filter raw_syscalls by number, the exporters name the syscall a
record carries.  x86_64 only for now, with its i386 (ia32 compat) ABI.
"""
from __future__ import annotations

from .syscalls_i386 import SYSCALLS_I386
from .syscalls_x86_64 import SYSCALLS_X86_64

__all__ = ["SYSCALLS_I386", "SYSCALLS_X86_64", "X64_PREFIX", "IA32_PREFIX", "x64_function", "ia32_function",
           "syscall_names", "entry_function"]

# the kernel's syscall entry functions on x86_64: __x64_sys_NAME for 64-bit
# tasks, __ia32_sys_NAME for 32-bit ones (their own numbers: SYSCALLS_I386)
X64_PREFIX = "__x64_sys_"
IA32_PREFIX = "__ia32_sys_"


def x64_function(name: str) -> str:
    """The entry function of the x86_64 syscall `name` ("dup" -> "__x64_sys_dup")."""
    return X64_PREFIX + name


def ia32_function(name: str) -> str:
    """The entry function of the i386 syscall `name` of a 32-bit task."""
    return IA32_PREFIX + name


_NAMES = {nr: name for name, nr in SYSCALLS_X86_64.items()}
_NAMES_I386 = {nr: name for name, nr in SYSCALLS_I386.items()}


def syscall_names(compat: bool = False) -> dict[int, str]:
    """number -> name of the x86_64 table, or the i386 one (compat)."""
    return _NAMES_I386 if compat else _NAMES


def entry_function(nr: int, compat: bool = False) -> str | None:
    """The entry function of syscall number `nr` ("__x64_sys_dup2", or
    "__ia32_sys_dup" for a 32-bit task's), None for an unknown number."""
    name = syscall_names(compat).get(nr)
    if name is None:
        return None
    return ia32_function(name) if compat else x64_function(name)
