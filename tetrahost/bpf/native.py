"""The compiled cffi extension, and libbpf's log routed into Python logging.

libbpf prints through one process-wide callback.  Everything it prints goes to
the `tetrahost.libbpf` logger; while a `capture_log()` block is active the lines
are also collected, so a failed load can carry its full verifier log.
"""
from __future__ import annotations

import contextlib
import logging
import threading

try:
    from tetrahost._libbpf import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised on unbuilt checkouts
    raise ImportError(
        "tetrahost's libbpf extension is not built: run `make build` "
        f"(needs libbpf-dev and a C compiler): {exc}"
    ) from exc

log = logging.getLogger("tetrahost.libbpf")
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}  # enum libbpf_print_level
_capture = threading.local()


@ffi.def_extern()
def th_log_message(level, msg):
    text = ffi.string(msg).decode("utf-8", "replace").rstrip("\n")
    lines = getattr(_capture, "lines", None)
    if lines is not None:
        lines.extend(text.split("\n"))
    # Verifier logs arrive at WARNING but are already attached to the error raised.
    log.log(logging.DEBUG if lines is not None else _LEVELS.get(level, logging.DEBUG), "%s", text)


@contextlib.contextmanager
def capture_log():
    """Collect libbpf's output on this thread for the duration of the block."""
    previous = getattr(_capture, "lines", None)
    _capture.lines = lines = []
    try:
        yield lines
    finally:
        _capture.lines = previous
        if previous is not None:
            previous.extend(lines)


lib.th_install_print()


def check_ptr(ptr, what: str, lines: list[str] | None = None):
    """libbpf 1.x returns NULL and sets errno on failure."""
    from tetrahost.bpf.errors import BpfError

    if ptr == ffi.NULL:
        raise BpfError(ffi.errno, what, lines)
    return ptr


def check_rc(rc: int, what: str, lines: list[str] | None = None) -> int:
    from tetrahost.bpf.errors import BpfError

    if rc < 0:
        raise BpfError(-rc, what, lines)
    return rc
