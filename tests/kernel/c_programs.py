"""Small C programs the kernel tests build and probe (uprobes, USDT points,
32-bit syscalls), and the selector snippets their policies share."""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest


def compile_c(source: str, out: pathlib.Path, *flags: str, missing: dict[str, str] | None = None) -> pathlib.Path:
    """Compile `source` into `out` with cc; the test fails (never skips) when
    there is no compiler or the build fails.  missing: a compiler message
    fragment -> what to install (e.g. a header's package)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) to build the test program")
    src = out.with_suffix(".c")
    src.write_text(source)
    built = subprocess.run([cc, *flags, "-o", str(out), str(src)], capture_output=True, text=True)
    src.unlink()
    for fragment, hint in (missing or {}).items():
        if built.returncode != 0 and fragment in built.stderr:
            pytest.fail(hint)
    assert built.returncode == 0, built.stderr
    return out


# Selectors on a probe with (int, string) arguments.
KILL_OR_POST = """
    - matchArgs:
      - index: 1
        operator: Equal
        values: ["killme"]
      matchActions:
      - action: Sigkill
    - matchActions:
      - action: Post
"""
ONLY_42 = """
    - matchArgs:
      - index: 0
        operator: Equal
        values: ["42"]
"""
