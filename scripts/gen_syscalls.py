#!/usr/bin/env python3
"""Regenerate tetrahost/arch/syscalls_x86_64.py and syscalls_i386.py from the
installed kernel headers (linux-libc-dev)."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLES = (
    ("unistd_64.h", "syscalls_x86_64.py", "SYSCALLS_X86_64", "x86_64",
     "Used by the sys_enter fallback, which sees syscall numbers, not names."),
    ("unistd_32.h", "syscalls_i386.py", "SYSCALLS_I386", "i386 (32-bit programs on x86_64: the ia32 compat ABI)",
     "A 32-bit task's syscalls carry these numbers at sys_enter, and its\n"
     "syscall64 arguments are them plus TH_SYSCALL64_I386."),
)

for header, out, name, arch, why in TABLES:
    text = pathlib.Path("/usr/include/x86_64-linux-gnu/asm", header).read_text()
    pairs = re.findall(r"#define __NR_(\w+) (\d+)", text)
    body = "\n".join(f'    "{sc}": {nr},' for sc, nr in pairs)
    path = ROOT / "tetrahost/arch" / out
    path.write_text(f'''"""{arch} syscall numbers, generated from Linux's asm/{header} (linux-libc-dev).

{why}  Shipped as data because hosts running the agent need not have kernel
headers installed.  Regenerate with scripts/gen_syscalls.py.
"""

{name} = {{
{body}
}}
''')
    print(f"{len(pairs)} syscalls -> {path}")
