#!/usr/bin/env python3
"""Regenerate tetrahost/sensors/syscalls_x86_64.py from the installed kernel headers."""
import pathlib
import re

HEADER = pathlib.Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
OUT = pathlib.Path(__file__).resolve().parents[1] / "tetrahost/sensors/syscalls_x86_64.py"

pairs = re.findall(r"#define __NR_(\w+) (\d+)", HEADER.read_text())
body = "\n".join(f'    "{name}": {nr},' for name, nr in pairs)
OUT.write_text(f'''"""x86_64 syscall numbers, generated from Linux's asm/unistd_64.h (linux-libc-dev).

Used by the sys_enter fallback, which sees syscall numbers, not names.  Shipped
as data because hosts running the agent need not have kernel headers installed.
Regenerate with scripts/gen_syscalls.py.
"""

SYSCALLS_X86_64 = {{
{body}
}}
''')
print(f"{len(pairs)} syscalls -> {OUT}")
