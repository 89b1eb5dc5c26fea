"""Values of Tetragon's process objects as exported text: capability and
signal names, the argument string, JSON string literals, RFC 3339 fractions
and the boot-time offset.  Used by the process renderer
(tetrahost/export/tetragon_json.py, which re-exports them) and the hook
renderers."""
from __future__ import annotations

import signal as _signal
import time
from functools import lru_cache

from tetrahost.events.text import bytes_to_text
from tetrahost.export.encode import dumps as _dumps

# The kernel's names, bit by bit (capability_arg's "name" is a plain string in
# Tetragon's schema and carries these).
KERNEL_CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# Tetragon's CapabilitiesType enum (capabilities.proto), used for capability
# sets (process.cap, process_credentials caps, cred_arg): bit 1 is "DAC_OVERRIDE".
CAPABILITY_NAMES = tuple("DAC_OVERRIDE" if n == "CAP_DAC_OVERRIDE" else n for n in KERNEL_CAPABILITY_NAMES)

@lru_cache(maxsize=1024)
def capability_names(mask: int) -> tuple[str, ...]:
    """Tetragon's CapabilitiesType names of the bits set in a capability mask
    (bits beyond the enum are left out: no value could name them)."""
    names = []
    bit = 0
    while mask:
        if mask & 1 and bit < len(CAPABILITY_NAMES):
            names.append(CAPABILITY_NAMES[bit])
        mask >>= 1
        bit += 1
    return tuple(names)


@lru_cache(maxsize=256)
def signal_name(signo: int) -> str:
    try:
        return _signal.Signals(signo).name
    except ValueError:
        return f"SIG{signo}"


def json_str(text: str) -> str:
    """text as a JSON string, as _dumps writes it: printable ASCII without a
    quote or backslash needs no escape (exec_ids, flags and times always are such
    text, written without this check)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return _dumps(text)


def _needs_quotes(arg: bytes) -> bool:
    # Four byte searches: a regex character class took ~2 ns a byte, and some
    # command lines (compilers, build tools) run to kilobytes.
    return b" " in arg or b"\t" in arg or b"\n" in arg or b'"' in arg


def format_arguments(args: list[bytes]) -> str:
    """argv[1:] as one string (quoting rule in the module docstring)."""
    if not args:
        return ""
    # Fast path, the common case: nothing to quote, one decode of the joined bytes.
    if all(args) and not _needs_quotes(b"\0".join(args)):
        return bytes_to_text(b" ".join(args))
    parts = []
    for arg in args:
        text = bytes_to_text(arg)
        if not arg or _needs_quotes(arg):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(text)
    return " ".join(parts)


def measure_boot_offset_ns(tries: int = 5) -> int:
    """Wall clock ns minus CLOCK_BOOTTIME ns, measured with the tightest bracket of `tries`."""
    best_width = best_offset = None
    for _ in range(tries):
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall = time.time_ns()
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        width = after - before
        if best_width is None or width < best_width:
            best_width, best_offset = width, wall - (before + width // 2)
    return best_offset


def format_fraction(nanos: int) -> str:
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"
