"""A workload for the syscall-ABI tests: one 64-bit program that makes raw
syscalls by number, through `syscall` (x86_64 numbers) or `int 0x80` (the
32-bit ABI: i386 numbers, the kernel treats the task as in a 32-bit syscall
exactly as for a 32-bit program), so no 32-bit toolchain is needed.

    abi-calls x:110 i:64 x:32:0     # getppid (x86_64), getppid (i386), dup(0) (x86_64)
    abi-calls open32 /some/path     # open(path, O_RDONLY) through the 32-bit ABI

Each argument is ABI:NR[:ARG0[:ARG1]]; the program prints NR's return value.
Built without PIE: open32's path sits in .bss, below 4 GiB, where a 32-bit
syscall's pointer can reach it.
"""
from __future__ import annotations

import subprocess
import uuid

from c_programs import compile_c
from kernel_expect import not_applicable

PROGRAM = r"""
#include <stdio.h>
#include <string.h>

static long sys64(long nr, long a, long b)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
	return r;
}

/* int 0x80 from a 64-bit task: the kernel's ia32 entry (r8-r11 are cleared) */
static long sys32(long nr, long a, long b)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b) : "r8", "r9", "r10", "r11", "memory");
	return r;
}

static char path32[4096];

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "open32")) {
		strncpy(path32, argv[2], sizeof(path32) - 1);
		long fd = sys32(5, (long)path32, 0);           /* i386 open */
		printf("open32=%ld\n", fd);
		return fd < 0;
	}
	for (int i = 1; i < argc; i++) {
		char abi = 0;
		long nr = 0, a = -1, b = -1;

		if (sscanf(argv[i], "%c:%ld:%ld:%ld", &abi, &nr, &a, &b) < 2)
			return 2;
		long r = abi == 'i' ? sys32(nr, a, b) : sys64(nr, a, b);
		printf("%s=%ld\n", argv[i], r);
		fflush(stdout);
	}
	return 0;
}
"""

# numbers used by the tests (asm/unistd_64.h, asm/unistd_32.h)
X64_GETPID, X64_GETPPID, X64_DUP, X64_DUP2, X64_SOCKET = 39, 110, 32, 33, 41
I386_GETPID, I386_GETPPID, I386_DUP = 20, 64, 41       # i386 dup is x86_64 socket's number
I386_OPEN = 5
I386 = 0x80000000                                       # Tetragon's Is32Bit in syscall64 values


def build(tmp_path_factory, name: str) -> str:
    """The program, compiled under a unique name; not applicable where the
    kernel runs no 32-bit syscalls (no IA32 emulation: int 0x80 faults)."""
    binary = compile_c(PROGRAM, tmp_path_factory.mktemp("abi-calls") / f"{name}-{uuid.uuid4().hex[:8]}",
                       "-O1", "-no-pie")
    probe = subprocess.run([str(binary), f"x:{X64_GETPID}", f"i:{I386_GETPID}"], capture_output=True, text=True)
    pids = [line.partition("=")[2] for line in probe.stdout.split()]
    if probe.returncode != 0 or len(pids) != 2 or pids[0] != pids[1]:
        not_applicable(f"no 32-bit syscalls on this kernel (int 0x80: {probe.returncode}, {probe.stdout!r})")
    return str(binary)


def run(binary: str, *calls: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *calls], capture_output=True, text=True, timeout=30)
