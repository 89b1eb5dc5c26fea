"""Tracepoint record layouts, from tracefs's events/<subsystem>/<event>/format.

A fact of the host, read here for the policy front end (compile_hook's
tracepoint_fields, resolve:) and the sensors.

Tetragon's tracepoint hooks name arguments by their position in that field
list, the common_* fields included (raw_syscalls/sys_enter: index 4 is `id`).
Those positions assume the four common fields of a generic kernel: a
PREEMPT_RT kernel adds its own after them (Debian's 6.1-rt:
common_preempt_lazy_count), which would move every argument of every
tracepoint policy one place (a string read from `dfd`, a policy that never
matches).  So the fields are numbered without the common_* fields a generic
kernel does not have; each keeps its own offset.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)")


@dataclass(frozen=True)
class Field:
    name: str
    type: str           # C declaration without the name ("const char *", "__data_loc char[]")
    offset: int
    size: int
    signed: bool

    @property
    def data_loc(self) -> bool:
        return self.type.startswith("__data_loc")

    @property
    def inline_array(self) -> bool:
        return self.type.endswith("]") and not self.data_loc

    @property
    def pointer(self) -> bool:
        return self.type.endswith("*")


STANDARD_COMMON = ("common_type", "common_flags", "common_preempt_count", "common_pid")


def policy_numbering(fields: list[Field]) -> list[Field]:
    """The fields as Tetragon's argument indexes count them (see above)."""
    return [f for f in fields if not f.name.startswith("common_") or f.name in STANDARD_COMMON]


class TracepointError(LookupError):
    pass


def parse_format(text: str) -> list[Field]:
    fields = []
    for m in _FIELD.finditer(text):
        decl = m["decl"].strip()
        # "char oldcomm[16]" -> type "char[16]", name "oldcomm"; "__data_loc char[] filename"
        array = re.match(r"(?P<type>.*?)\s*(?P<name>\w+)\s*(?P<dims>\[\d*\])$", decl)
        if array:
            name, ctype = array["name"], f"{array['type']}{array['dims']}"
        else:
            ctype, _, name = decl.rpartition(" ")
            while name.startswith("*"):
                ctype, name = ctype + " *", name[1:]
        fields.append(Field(name, ctype.strip(), int(m["offset"]), int(m["size"]), m["signed"] == "1"))
    return fields


def event_fields(subsystem: str, event: str, tracefs_dirs=TRACEFS_DIRS) -> list[Field]:
    for base in tracefs_dirs:
        path = os.path.join(base, "events", subsystem, event, "format")
        try:
            with open(path) as f:
                return policy_numbering(parse_format(f.read()))
        except FileNotFoundError:
            if os.path.isdir(os.path.join(base, "events")):
                raise TracepointError(f"tracepoint {subsystem}/{event} does not exist on this kernel "
                                      f"({path} is missing)") from None
        except PermissionError as exc:
            raise TracepointError(f"cannot read {path}: {exc.strerror} (needs root)") from None
    raise TracepointError(f"tracefs is not mounted (looked in {', '.join(tracefs_dirs)})")

