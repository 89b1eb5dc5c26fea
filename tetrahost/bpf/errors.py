"""Errors raised by the libbpf binding: always an errno and, for loads, the log."""
from __future__ import annotations

import errno as errno_mod
import os


class BpfError(OSError):
    """A libbpf call failed.

    `errno` is the positive error number; `log` holds every line libbpf printed
    during the call (for a failed load: the verifier log, in full).  str() shows
    the operation, the error and the last few log lines, which is usually where
    the verifier says why.
    """

    SUMMARY_LINES = 6

    def __init__(self, err: int, what: str, log: list[str] | None = None):
        err = abs(err) or errno_mod.EINVAL
        self.log = log or []
        self.what = what
        super().__init__(err, f"{what}: {errno_name(err)} ({os.strerror(err)})")

    def __str__(self) -> str:
        text = self.strerror and f"{self.what}: {errno_name(self.errno)} ({os.strerror(self.errno)})"
        # libbpf's own framing lines say nothing the first line does not
        tail = [line for line in self.log
                if line.strip() and not line.startswith(("libbpf:", "-- END PROG LOAD LOG"))][-self.SUMMARY_LINES:]
        if tail:
            text += "\n  " + "\n  ".join(tail)
        return text

    @property
    def full_log(self) -> str:
        return "\n".join(self.log)


def errno_name(err: int) -> str:
    return errno_mod.errorcode.get(err, f"errno {err}")
