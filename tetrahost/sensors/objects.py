"""Where the compiled BPF objects (*.bpf.o) live.

Order: $TETRAHOST_BPF_DIR, the source checkout's build/bpf (development), then
/usr/lib/tetrahost/bpf (the packages install them there).
"""
from __future__ import annotations

import os
import pathlib

INSTALLED_DIR = pathlib.Path("/usr/lib/tetrahost/bpf")
CHECKOUT_DIR = pathlib.Path(__file__).resolve().parents[2] / "build" / "bpf"


def search_dirs() -> list[pathlib.Path]:
    dirs = []
    if os.environ.get("TETRAHOST_BPF_DIR"):
        dirs.append(pathlib.Path(os.environ["TETRAHOST_BPF_DIR"]))
    dirs += [CHECKOUT_DIR, INSTALLED_DIR]
    return dirs


def find_object(name: str) -> pathlib.Path:
    """Path of `<name>.bpf.o`; FileNotFoundError says where it looked."""
    dirs = search_dirs()
    for d in dirs:
        candidate = d / f"{name}.bpf.o"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"BPF object {name}.bpf.o not found in {', '.join(map(str, dirs))} "
        "(build it with `make bpf`, or set TETRAHOST_BPF_DIR)")
